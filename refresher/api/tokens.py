"""/api/tokens: named, revocable API tokens for scripts; only a session (the
password holder) may create them, and the secret is shown once."""
from __future__ import annotations

import time
import unicodedata

from flask import Blueprint, request

from .. import auth, store
from ..auth import token_auth
from ..db import get_conn
from .errors import APIError
from .serialize import iso

bp = Blueprint("tokens", __name__, url_prefix="/api/tokens")

MAX_NAME_LENGTH = 100


def clean_token_name(name) -> str | None:
    """The name without surrounding blanks, or None when it is not 1–100
    printable characters (control characters would garble listings; lone
    surrogates cannot be stored)."""
    if not isinstance(name, str):
        return None
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        return None
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        return None
    return name


@bp.before_request
@token_auth.login_required
def require_token():
    """Every route here needs a bearer token."""


@bp.post("")
def create_token():
    if token_auth.current_user().kind != "session":
        raise APIError(403, "API tokens cannot create tokens; sign in with the password")
    body = request.get_json(silent=True) if request.is_json else request.form
    name = clean_token_name(body.get("name") if isinstance(body, dict) or hasattr(body, "get") else None)
    if name is None:
        raise APIError(400, f"name must be 1 to {MAX_NAME_LENGTH} printable characters, "
                            f"e.g. {{\"name\": \"nightly build\"}}")
    token_id, secret = auth.new_api_token()
    now = time.time()
    store.create_api_token(get_conn(), token_id, name, auth.hash_api_token(secret), now)
    return {"id": token_id, "name": name, "token": secret, "createdAt": iso(now)}, 201


@bp.get("")
def list_tokens():
    return [{"id": t["id"], "name": t["name"], "createdAt": iso(t["created_at"]),
             "lastUsedAt": iso(t["last_used_at"])} for t in store.list_api_tokens(get_conn())]


@bp.delete("/<token_id>")
def revoke_token(token_id: str):
    if not store.delete_api_token(get_conn(), token_id):
        raise APIError(404, f"no API token with id {token_id[:64]!r}")
    return "", 204
