"""/api/tokens: named, revocable API tokens for scripts; only a session (the
password holder) may create them, and the secret is shown once."""
from __future__ import annotations

import time

from flask import Blueprint, request

from .. import auth, store
from ..auth import token_auth
from ..db import get_conn
from .errors import APIError
from .serialize import iso

bp = Blueprint("tokens", __name__, url_prefix="/api/tokens")


@bp.before_request
@token_auth.login_required
def require_token():
    """Every route here needs a bearer token."""


@bp.post("")
def create_token():
    if token_auth.current_user().kind != "session":
        raise APIError(403, "API tokens cannot create tokens; sign in with the password")
    body = request.get_json(silent=True) if request.is_json else request.form
    name = body.get("name") if isinstance(body, dict) or hasattr(body, "get") else None
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
        raise APIError(400, "name must be text of 1 to 100 characters")
    token_id, secret = auth.new_api_token()
    now = time.time()
    store.create_api_token(get_conn(), token_id, name.strip(), auth.hash_api_token(secret), now)
    return {"id": token_id, "name": name.strip(), "token": secret, "createdAt": iso(now)}, 201


@bp.get("")
def list_tokens():
    return [{"id": t["id"], "name": t["name"], "createdAt": iso(t["created_at"]),
             "lastUsedAt": iso(t["last_used_at"])} for t in store.list_api_tokens(get_conn())]


@bp.delete("/<token_id>")
def revoke_token(token_id: str):
    if not store.delete_api_token(get_conn(), token_id):
        raise APIError(404, f"no API token with id {token_id[:64]!r}")
    return "", 204
