"""/api/tokens: named, revocable API tokens for scripts; only a session (the
password holder) may create them or revoke any of them, and the secret is
shown once. An API token may revoke only itself (a leaked one cannot lock the
team's scripts out)."""

from __future__ import annotations

import time

from flask import Blueprint, request

from .. import auth, contract
from ..auth import token_auth
from ..errors import Rejected
from ..extensions import refresher
from ..shapes import iso, token_summary

bp = Blueprint("tokens", __name__, url_prefix="/api/tokens")


@bp.before_request
@token_auth.login_required
def require_token():
    """Every route here needs a bearer token."""


@bp.post("")
def create_token():
    if token_auth.current_user().kind != "session":
        raise Rejected(403, "API tokens cannot create tokens; sign in with the password")
    body = request.get_json(silent=True) if request.is_json else request.form
    # a JSON object, or the form (a MultiDict, which is a dict too); any other JSON has no name
    name = auth.clean_token_name(body.get("name") if isinstance(body, dict) else None)
    if name is None:
        raise Rejected(
            400,
            f"name must be 1 to {contract.MAX_TOKEN_NAME_LENGTH} printable characters, "
            f'e.g. {{"name": "nightly build"}}',
        )
    token_id, secret = auth.new_api_token()
    now = time.time()
    refresher().store.create_api_token(token_id, name, auth.hash_api_token(secret), now)
    return {"id": token_id, "name": name, "token": secret, "createdAt": iso(now)}, 201


@bp.get("")
def list_tokens():
    return [token_summary(t) for t in refresher().store.list_api_tokens()]


@bp.delete("/<token_id>")
def revoke_token(token_id: str):
    caller = token_auth.current_user()
    if caller.kind != "session" and caller.token_id != token_id:
        raise Rejected(403, "an API token may revoke only itself; sign in with the password to revoke others")
    if not refresher().store.delete_api_token(token_id):
        raise Rejected(404, f"no API token with id {token_id[:64]!r}")
    return "", 204
