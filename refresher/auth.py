"""Who may call the API: the shared password, signed session tokens and API tokens.

* The password (AUTH_PASSWORD, or generated once and kept in the database)
  buys a session token: an itsdangerous signature, made with TOKEN_SECRET,
  over the session's random id, its start and its end (TOKEN_TTL_SECONDS
  later). Every worker and host checks the signature alone, and then asks the
  store whether the session was ended early: by sign-out (its id is recorded
  until it would have expired) or by "end every session" (one mark in time;
  sessions begun before it are over). The store is shared by every worker and,
  on PostgreSQL, every host, so an ended session stops working everywhere at
  once.
* API tokens are long-lived random secrets with a recognizable prefix; only
  their SHA-256 is stored.

* The web form signs a browser in with a cookie session (Flask's signed
  cookie) instead, with a session id of its own, ended the same way. When a
  request to the API carries no Authorization header,
  that session is accepted too; because a browser sends its cookies along with
  requests that other sites make it send, a state-changing request that relies
  on the cookie must also carry the page's CSRF token.

`token_auth` checks the `Authorization: Bearer` header (or the cookie session)
and hands the caller to views as `token_auth.current_user()`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from flask import g, request, session
from flask_httpauth import HTTPTokenAuth
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from . import contract
from .errors import Rejected
from .extensions import limiter, refresher
from .names import has_invisible
from .store import Store, new_id

log = logging.getLogger(__name__)

API_TOKEN_PREFIX = "vr_"
# Failed sign-ins per client address: POST /api/auth and the web form draw on
# one budget (a shared limit), so trying both routes buys no extra guesses.
LOGIN_LIMIT = "10 per minute;50 per hour"
throttle_failed_sign_ins = limiter.shared_limit(
    LOGIN_LIMIT, scope="sign-in", methods=["POST"], deduct_when=lambda response: response.status_code == 401
)
PASSWORD_FILE = "auth_password"
SECRET_FILE = "token_secret"
LAST_USED_GRANULARITY = 60  # seconds

CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Session:
    """One sign-in with the password: a session token, or a browser's cookie."""

    id: str
    begun_at: float
    expires_at: float
    browser: bool = False  # the web form's cookie session, not a bearer token


@dataclass(frozen=True)
class Caller:
    kind: str  # "session" (the password holder, by token or browser) or "api"
    token_id: str | None = None  # the API token's id
    session: Session | None = None


# --- secrets shared by every process ---------------------------------------------------

PASSWORD_SECRET = "auth_password"
TOKEN_SECRET = "token_secret"
PASSWORD_SOURCE = "password_source"  # "AUTH_PASSWORD" or "generated": what the service last started with


def _kept_file(settings, name: str) -> str | None:
    """A secret an older release kept as a file in DATA_DIR, so that an
    upgraded install keeps its password and its sessions."""
    try:
        return (Path(settings.data_dir) / name).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def load_secrets(settings, store: Store) -> tuple[str, str]:
    """(password, token secret) from the settings, or made once and kept in
    the database, so that every worker, every host and every restart agrees —
    never on a disk that a platform wipes at each restart. A generated
    password is printed once, by the process that made it."""
    now = time.time()
    password = settings.auth_password
    if password is None:
        kept = _kept_file(settings, PASSWORD_FILE)
        password, made = store.secret(PASSWORD_SECRET, lambda: kept or secrets.token_urlsafe(12), now)
        if made and not kept:
            print(
                f"Generated password for Video Refresher: {password}  (kept in the database; "
                f"`flask --app app password` shows it again; set AUTH_PASSWORD to choose one)",
                flush=True,
            )
    token_secret = settings.token_secret
    if token_secret is None:
        kept = _kept_file(settings, SECRET_FILE)
        token_secret, _ = store.secret(TOKEN_SECRET, lambda: kept or secrets.token_urlsafe(48), now)
    return password, token_secret


def record_password_source(settings, store: Store) -> None:
    """At a server's start: whether AUTH_PASSWORD set its password, so that
    `flask --app app password`, run where that variable is not set (another
    shell, a one-off dyno), does not show a generated password nobody can
    sign in with."""
    store.set_note(PASSWORD_SOURCE, "generated" if settings.auth_password is None else "AUTH_PASSWORD", time.time())


def password_source(store: Store) -> str | None:
    return store.note(PASSWORD_SOURCE)


# --- session tokens ----------------------------------------------------------------


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(refresher().token_secret, salt="refresher.session")


def check_password(candidate: str) -> bool:
    expected = refresher().password.encode()
    return hmac.compare_digest(candidate.encode(), expected)


def issue_session_token() -> tuple[str, float]:
    """A signed token and its expiry time (Unix seconds). It carries a mark of
    the password, so choosing a new password ends every session."""
    now = time.time()
    expires_at = now + refresher().settings.token_ttl_seconds
    token = _serializer().dumps(
        {"k": "s", "i": _new_session_id(), "t": now, "e": expires_at, "p": _password_mark()[:12]}
    )
    return token, expires_at


def _new_session_id() -> str:
    return secrets.token_urlsafe(16)


def _session(session_id, begun_at, expires_at, browser: bool = False) -> Session | None:
    """The session these values describe, if it is still going: not expired,
    not ended early. (Tokens from before sessions had ids carry none: refused.)"""
    if not isinstance(session_id, str) or not 16 <= len(session_id) <= 64:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (begun_at, expires_at)):
        return None
    if time.time() >= expires_at or refresher().store.session_ended(session_id, begun_at):
        return None
    return Session(session_id, float(begun_at), float(expires_at), browser)


def _verify_session_token(token: str) -> Caller | None:
    try:
        payload = _serializer().loads(token, max_age=refresher().settings.token_ttl_seconds)
    except (SignatureExpired, BadSignature):
        return None
    if not isinstance(payload, dict) or payload.get("k") != "s":
        return None
    mark = payload.get("p")
    if not isinstance(mark, str) or not hmac.compare_digest(mark, _password_mark()[:12]):
        return None
    found = _session(payload.get("i"), payload.get("t"), payload.get("e"))
    return Caller("session", session=found) if found else None


def end_session(ended: Session) -> None:
    """Sign-out: this session stops working on every worker and host at once."""
    refresher().store.end_session(ended.id, ended.expires_at, time.time())
    g.pop(_BROWSER_SESSION, None)


def end_every_session() -> None:
    """Every session begun until now, by token or browser, stops working.
    API tokens are not sessions: they stay until revoked."""
    refresher().store.end_every_session(time.time())
    g.pop(_BROWSER_SESSION, None)


# --- API tokens ------------------------------------------------------------------------


def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_token() -> tuple[str, str]:
    """(id, secret) for a new API token."""
    return new_id(), API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def _verify_api_token(token: str) -> Caller | None:
    store = refresher().store
    row = store.find_api_token(hash_api_token(token))
    if row is None:
        return None
    # lastUsedAt to the minute: checked here so that most requests write nothing
    # (an UPDATE, even one that matches no row, waits for SQLite's write lock).
    now = time.time()
    if row["last_used_at"] is None or row["last_used_at"] < now - LAST_USED_GRANULARITY:
        store.touch_api_token(row["id"], now, LAST_USED_GRANULARITY)
    return Caller("api", row["id"])


def clean_token_name(name) -> str | None:
    """The name without surrounding blanks, or None when it is not 1–100
    printable characters (control, bidi and other invisible characters would
    garble or disguise listings; lone surrogates cannot be stored)."""
    if not isinstance(name, str):
        return None
    name = name.strip()
    if not contract.MIN_TOKEN_NAME_LENGTH <= len(name) <= contract.MAX_TOKEN_NAME_LENGTH:
        return None
    if has_invisible(name):
        return None
    return name


# --- browser sessions (the web form) ---------------------------------------------

_SESSION_ID = "sessionId"
_SIGNED_IN_AT = "signedInAt"
_EXPIRES_AT = "expiresAt"
_PASSWORD_MARK = "passwordMark"
_CSRF = "csrf"
_BROWSER_SESSION = "refresher_browser_session"  # in flask.g: checked once per request


def _password_mark() -> str:
    """Changes with AUTH_PASSWORD, so choosing a new password signs every browser out."""
    key = refresher().token_secret.encode()
    return hmac.new(key, refresher().password.encode(), hashlib.sha256).hexdigest()[:32]


def csrf_token() -> str:
    """The browser's anti-forgery token, made on first use and kept in its session."""
    token = session.get(_CSRF)
    if not isinstance(token, str) or not token:
        token = session[_CSRF] = secrets.token_urlsafe(32)
    return token


def csrf_token_matches(candidate: str | None) -> bool:
    expected = session.get(_CSRF)
    if not candidate or not isinstance(expected, str) or not expected:
        return False
    return hmac.compare_digest(candidate.encode(), expected.encode())


def sign_in_browser() -> None:
    """Mark this browser as signed in, with a new session id and a fresh CSRF token."""
    now = time.time()
    session.clear()
    session.permanent = True
    session[_SESSION_ID] = _new_session_id()
    session[_SIGNED_IN_AT] = now
    session[_EXPIRES_AT] = now + refresher().settings.token_ttl_seconds
    session[_PASSWORD_MARK] = _password_mark()
    session[_CSRF] = secrets.token_urlsafe(32)
    g.pop(_BROWSER_SESSION, None)


def sign_out_browser() -> None:
    """End the browser's session on the server (a copy of the cookie kept
    elsewhere is worthless from now on), then forget it in the browser."""
    signed_in = browser_session()
    if signed_in is not None:
        end_session(signed_in)
    session.clear()
    g.pop(_BROWSER_SESSION, None)


def browser_session() -> Session | None:
    """The browser's session when it is signed in; None otherwise."""
    if _BROWSER_SESSION not in g:
        setattr(g, _BROWSER_SESSION, _read_browser_session())
    return g.get(_BROWSER_SESSION)


def _read_browser_session() -> Session | None:
    signed_in_at = session.get(_SIGNED_IN_AT)
    if not isinstance(signed_in_at, (int, float)):
        return None
    if time.time() - signed_in_at > refresher().settings.token_ttl_seconds:
        return None
    if not hmac.compare_digest(str(session.get(_PASSWORD_MARK, "")).encode(), _password_mark().encode()):
        return None
    return _session(session.get(_SESSION_ID), signed_in_at, session.get(_EXPIRES_AT), browser=True)


def browser_signed_in() -> bool:
    return browser_session() is not None


def _browser_caller() -> Caller | None:
    signed_in = browser_session()
    if signed_in is None:
        return None
    if request.method not in SAFE_METHODS and not csrf_token_matches(request.headers.get(CSRF_HEADER)):
        raise Rejected(403, f"this request needs the page's {CSRF_HEADER} header; reload the page and try again")
    return Caller("session", session=signed_in)


class BearerOrBrowserAuth(HTTPTokenAuth):
    """A bearer token when an Authorization header is sent; otherwise the web
    form's signed-in cookie session (never both: a bad header is not rescued
    by a cookie)."""

    def authenticate(self, auth, stored_password):
        if "Authorization" in request.headers:
            return super().authenticate(auth, stored_password)
        return _browser_caller()


token_auth = BearerOrBrowserAuth(scheme="Bearer")


@token_auth.verify_token
def verify_token(token: str) -> Caller | None:
    if not token or len(token) > 512:
        return None
    if token.startswith(API_TOKEN_PREFIX):
        return _verify_api_token(token)
    return _verify_session_token(token)


@token_auth.error_handler
def auth_error(status: int):
    # Raised, not returned: api/errors.py answers every error, this one included.
    raise Rejected(
        status,
        "a valid bearer token is required (POST /api/auth for one)" if status == 401 else "this token may not do that",
    )


def client_address() -> str:
    return request.remote_addr or "unknown"
