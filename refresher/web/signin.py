"""Signing a browser in and out with the shared password.

A successful sign-in marks Flask's signed cookie session (HttpOnly,
SameSite=Lax, valid TOKEN_TTL_SECONDS from the sign-in) with a session id;
signing out ends that session on the server, so a copy of the cookie kept
elsewhere stops working too. Both forms carry the
session's CSRF token. Failed attempts are throttled per address, on the same
budget as POST /api/auth; successful ones never count.
"""

from __future__ import annotations

import re
from functools import wraps

from flask import redirect, render_template, request, url_for
from flask.sessions import SecureCookieSessionInterface

from .. import auth
from . import bp

MAX_PASSWORD_LENGTH = 1024


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the page came over HTTPS
    (directly, or through a trusted proxy's X-Forwarded-Proto), so the cookie
    never travels in clear once a site uses TLS, while plain-HTTP installs on
    a LAN keep working."""

    def get_cookie_secure(self, app) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)


@bp.record_once
def configure_session_cookie(state) -> None:
    state.app.session_interface = SessionInterface()
    config = state.app.config
    config.update(
        SESSION_COOKIE_NAME="refresher_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=state.app.extensions["refresher"].settings.token_ttl_seconds,
        # the sign-in time decides expiry, so the cookie need not be re-sent on every poll
        SESSION_REFRESH_EACH_REQUEST=False,
    )


@bp.context_processor
def session_helpers() -> dict:
    return {"csrf_token": auth.csrf_token, "signed_in": auth.browser_signed_in}


def signin_required(view):
    """Send a browser that is not signed in to the sign-in page, then back."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if not auth.browser_signed_in():
            target = request.full_path.rstrip("?")
            return redirect(url_for("web.login", next=target if target != "/" else None))
        return view(*args, **kwargs)

    return wrapped


# A path on this site: browsers drop tabs and newlines and read "\\" as "/",
# so "/\t/evil.example" would be another site; allow plain characters only.
_LOCAL_PATH = re.compile(r"/(?![/\\])[\w\-./?=&%~+:@!$'()*,;]*", re.ASCII)


def _local_target(value: str | None) -> str:
    """Where to go after signing in: a path on this site, never another site."""
    if not value or not _LOCAL_PATH.fullmatch(value):
        return url_for("web.index")
    return value


def _login_page(error: str | None, status: int, next_url: str):
    return render_template("login.html", error=error, next_url=next_url), status


@bp.route("/login", methods=["GET", "POST"])
@auth.throttle_failed_sign_ins
def login():
    next_url = _local_target(request.values.get("next"))
    if request.method == "GET":
        if auth.browser_signed_in():
            return redirect(next_url)
        return _login_page(None, 200, next_url)
    if not auth.csrf_token_matches(request.form.get("csrf_token")):
        return _login_page("This page was open for too long. Please enter the password again.", 400, next_url)
    password = request.form.get("password", "")
    if not password:
        return _login_page("Enter the team password.", 400, next_url)
    if len(password) > MAX_PASSWORD_LENGTH or not auth.check_password(password):
        return _login_page("That password is not right. Please try again.", 401, next_url)
    auth.sign_in_browser()
    return redirect(next_url)


@bp.errorhandler(429)
def too_many_attempts(exc):
    return _login_page(
        "Too many wrong passwords from this address. Wait a minute, then try again.", 429, url_for("web.index")
    )


@bp.post("/logout")
def logout():
    if auth.csrf_token_matches(request.form.get("csrf_token")):
        auth.sign_out_browser()
        return redirect(url_for("web.login"))
    return render_template(
        "message.html", title="Not signed out", message="This page was open for too long. Reload it and sign out again."
    ), 400
