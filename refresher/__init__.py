"""Video Refresher: upload ad creatives, get fresh variations back.

`create_app` is the table of contents: where HTTP ends and the engine begins.
It never starts the supervisor, a pool or a scheduler — gunicorn's master
(`config/gunicorn.conf.py`) or `python app.py` does that, once per host.

Flask is imported inside the functions, not here, so that the command-line
client (`python -m refresher.client`) runs with `requests` alone.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from config.settings import Settings

__version__ = "0.1.0"


def create_app(settings: Settings | None = None) -> Flask:
    from flask import Flask

    from config.settings import load_settings

    settings = settings if settings is not None else load_settings()
    app = Flask(__name__)
    configure(app, settings)
    register_blueprints(app)
    register_extensions(app)
    register_request_limits(app)
    register_errorhandlers(app)
    register_commands(app)
    return app


def configure(app: Flask, settings: Settings) -> None:
    from . import store
    from .auth import load_secrets
    from .intake import MAX_FILES, UploadRequest
    from .media import ffmpeg

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    conn = store.connect(settings.db_path)
    try:
        store.migrate(conn)
    finally:
        conn.close()
    password, token_secret = load_secrets(settings)
    try:
        binary = ffmpeg.resolve_binary(settings.ffmpeg_binary)
    except ffmpeg.FFmpegNotFound:
        binary = settings.ffmpeg_binary or "ffmpeg-missing"  # /api/health reports it as degraded
    app.request_class = UploadRequest
    app.config.update(
        SETTINGS=settings,
        AUTH_PASSWORD=password,
        TOKEN_SECRET=token_secret,
        SECRET_KEY=token_secret,
        TOKEN_TTL_SECONDS=settings.token_ttl_seconds,
        FFMPEG_BINARY=binary,
        # the whole request: every file at its limit, plus the form fields
        MAX_CONTENT_LENGTH=MAX_FILES * settings.max_upload_bytes + 1024 * 1024,
    )
    app.config["RATELIMIT_STORAGE_URI"] = f"refresher-sqlite://{settings.db_path.resolve()}"
    app.json.sort_keys = False  # keep the documented field order
    if settings.trust_proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Behind a router (Heroku's adds one hop): the client's address is in
        # X-Forwarded-For, which login throttling must use.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trust_proxy_hops,
                                x_proto=settings.trust_proxy_hops)


def register_extensions(app: Flask) -> None:
    from .extensions import limiter

    limiter.init_app(app)
    for name in ("jobs", "tokens", "health"):  # only sign-in is throttled; skip the check elsewhere
        limiter.exempt(app.blueprints[name])
    origins = app.config["SETTINGS"].cors_origins
    if origins:  # CORS stays off unless CORS_ORIGINS names who may call the API
        from flask_cors import CORS

        CORS(app, resources={r"/api/*": {"origins": list(origins)}}, supports_credentials=False,
             allow_headers=["Authorization", "Content-Type"], expose_headers=["Location", "Retry-After"],
             max_age=600)


def register_blueprints(app: Flask) -> None:
    from .api import auth, health, jobs, tokens
    from . import web

    for module in (auth, tokens, jobs, health):
        app.register_blueprint(module.bp)
    app.register_blueprint(web.bp)


SMALL_BODY_LIMIT = 64 * 1024  # every route but the upload takes a small JSON or form body


def register_request_limits(app: Flask) -> None:
    """Only the upload route may receive a large body; everything else is
    capped small, so a huge JSON document cannot eat a worker's memory."""
    from flask import request

    app.config["MAX_FORM_PARTS"] = 50

    @app.before_request
    def _cap_request_body():
        if request.endpoint != "jobs.create_job":
            request.max_content_length = SMALL_BODY_LIMIT


def register_errorhandlers(app: Flask) -> None:
    from flask import request
    from werkzeug.exceptions import HTTPException

    from .api.errors import APIError, handle_api_error, handle_disk_full, handle_http_exception
    from .db import close_conn
    from .intake import remove_staging

    app.register_error_handler(APIError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(OSError, handle_disk_full)
    app.teardown_appcontext(close_conn)

    @app.teardown_request
    def _remove_staged_uploads(exc=None):
        for upload in request.files.values() if "files" in request.__dict__ else ():
            upload.close()
        remove_staging(request.environ)


def register_commands(app: Flask) -> None:
    from .commands import tokens_cli

    app.cli.add_command(tokens_cli)
