"""Who may call the API: the shared password, signed session tokens and API tokens.

* The password (AUTH_PASSWORD, or generated once and kept in DATA_DIR) buys a
  session token: an itsdangerous signature over the issue time, made with
  TOKEN_SECRET, valid TOKEN_TTL_SECONDS. Stateless, so every worker accepts it.
* API tokens are long-lived random secrets with a recognizable prefix; only
  their SHA-256 is stored.

flask-httpauth's `HTTPTokenAuth` checks the `Authorization: Bearer` header and
hands the caller to views as `token_auth.current_user()`.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from flask import current_app, request
from flask_httpauth import HTTPTokenAuth
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from . import store
from .db import get_conn

log = logging.getLogger(__name__)

API_TOKEN_PREFIX = "vr_"
PASSWORD_FILE = "auth_password"
SECRET_FILE = "token_secret"

token_auth = HTTPTokenAuth(scheme="Bearer")


@dataclass(frozen=True)
class Caller:
    kind: str                    # "session" or "api"
    token_id: str | None = None  # the API token's id


# --- secrets kept in DATA_DIR -------------------------------------------------

def _read_or_create(path: Path, make) -> tuple[str, bool]:
    """Return the file's content, creating it atomically (0600) if missing.
    Safe when several processes race: exactly one creation wins."""
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make() + "\n")
    try:
        os.link(temp, path)  # fails if another process got there first
        created = True
    except FileExistsError:
        created = False
    finally:
        temp.unlink()
    return path.read_text().strip(), created


def load_secrets(settings) -> tuple[str, str]:
    """(password, token secret) from the settings, or generated once and kept in
    DATA_DIR so that every worker and every restart agrees. A generated password
    is printed once, when it is made."""
    password = settings.auth_password
    if password is None:
        password, created = _read_or_create(Path(settings.data_dir) / PASSWORD_FILE,
                                            lambda: secrets.token_urlsafe(12))
        if created:
            message = (f"Generated password for Video Refresher: {password}  "
                       f"(kept in {Path(settings.data_dir) / PASSWORD_FILE}; set AUTH_PASSWORD to choose one)")
            print(message, flush=True)
    token_secret = settings.token_secret
    if token_secret is None:
        token_secret, _ = _read_or_create(Path(settings.data_dir) / SECRET_FILE,
                                          lambda: secrets.token_urlsafe(48))
    return password, token_secret


# --- session tokens ----------------------------------------------------------------

def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["TOKEN_SECRET"], salt="refresher.session")


def check_password(candidate: str) -> bool:
    expected = current_app.config["AUTH_PASSWORD"].encode()
    return hmac.compare_digest(candidate.encode(), expected)


def issue_session_token() -> tuple[str, float]:
    """A signed token and its expiry time (Unix seconds)."""
    token = _serializer().dumps({"k": "s"})
    return token, time.time() + current_app.config["TOKEN_TTL_SECONDS"]


def _verify_session_token(token: str) -> Caller | None:
    try:
        payload = _serializer().loads(token, max_age=current_app.config["TOKEN_TTL_SECONDS"])
    except (SignatureExpired, BadSignature):
        return None
    return Caller("session") if payload == {"k": "s"} else None


# --- API tokens ------------------------------------------------------------------------

def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_token() -> tuple[str, str]:
    """(id, secret) for a new API token."""
    return secrets.token_urlsafe(9), API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def _verify_api_token(token: str) -> Caller | None:
    conn = get_conn()
    row = store.find_api_token(conn, hash_api_token(token))
    if row is None:
        return None
    store.touch_api_token(conn, row["id"], time.time())
    return Caller("api", row["id"])


@token_auth.verify_token
def verify_token(token: str) -> Caller | None:
    if not token or len(token) > 512:
        return None
    if token.startswith(API_TOKEN_PREFIX):
        return _verify_api_token(token)
    return _verify_session_token(token)


@token_auth.error_handler
def auth_error(status: int):
    from .api.errors import error_response

    message = ("a valid bearer token is required (POST /api/auth for one)" if status == 401
               else "this token may not do that")
    return error_response(status, message)


def client_address() -> str:
    return request.remote_addr or "unknown"
