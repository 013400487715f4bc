"""/api/auth: the shared password in exchange for a session token, and
sign-out (this session, or every session at once)."""

from __future__ import annotations

from flask import Blueprint, request, session

from .. import auth
from ..auth import token_auth
from ..errors import Rejected
from ..shapes import iso

bp = Blueprint("auth", __name__, url_prefix="/api")


def _password_from_request() -> str | None:
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise Rejected(400, 'send JSON like {"password": "..."}')
        value = body.get("password")
    else:
        value = request.form.get("password")
    if value is not None and not isinstance(value, str):
        raise Rejected(400, "password must be a string")
    return value


def _is_utf8(text: str) -> bool:
    """False for JSON strings with lone surrogates ("\\ud800"): never a password."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@bp.post("/auth")
@auth.throttle_failed_sign_ins
def login():
    password = _password_from_request()
    if not password:
        raise Rejected(400, 'no password: send {"password": "..."}')
    if len(password) > 1024 or not _is_utf8(password) or not auth.check_password(password):
        raise Rejected(401, "wrong password")
    token, expires = auth.issue_session_token()
    return {"token": token, "expiresAt": iso(expires)}


@bp.delete("/auth")
@token_auth.login_required
def logout():
    """End the session that sent this (a session token or the browser's cookie
    session); with ?all=1, every session, this one included."""
    caller = token_auth.current_user()
    if caller.session is None:
        raise Rejected(403, "an API token is not a session: revoke it with DELETE /api/tokens/<id>")
    every = request.args.get("all", "0")
    if every not in ("0", "1", "false", "true"):
        raise Rejected(400, "all must be 1 (end every session) or 0 (this one)")
    if every in ("1", "true"):
        auth.end_every_session()
    else:
        auth.end_session(caller.session)
    if caller.session.browser:
        session.clear()  # and the browser forgets its cookie
    return "", 204
