"""/api/auth: the shared password in exchange for a session token."""
from __future__ import annotations

from flask import Blueprint, request

from .. import auth
from ..errors import Rejected
from ..shapes import iso

bp = Blueprint("auth", __name__, url_prefix="/api")


def _password_from_request() -> str | None:
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise Rejected(400, "send JSON like {\"password\": \"...\"}")
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
        raise Rejected(400, "no password: send {\"password\": \"...\"}")
    if len(password) > 1024 or not _is_utf8(password) or not auth.check_password(password):
        raise Rejected(401, "wrong password")
    token, expires = auth.issue_session_token()
    return {"token": token, "expiresAt": iso(expires)}
