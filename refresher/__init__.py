"""Video Refresher: upload ad creatives, get fresh variations back.

`create_app` is the table of contents: where HTTP ends and the engine begins.
It never starts the supervisor, a pool or a scheduler — gunicorn's master
(`config/gunicorn.conf.py`) or `python app.py` does that, once per host.
"""
from __future__ import annotations

import logging

from flask import Flask, request

from config.settings import Settings, load_settings

__version__ = "0.1.0"


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings if settings is not None else load_settings()
    app = Flask(__name__)
    configure(app, settings)
    register_extensions(app)
    register_blueprints(app)
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
        binary = settings.ffmpeg_binary or "ffmpeg"  # /api/health reports it as degraded
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
    app.json.sort_keys = False  # keep the documented field order


def register_extensions(app: Flask) -> None:
    from .extensions import limiter

    limiter.init_app(app)


def register_blueprints(app: Flask) -> None:
    from .api import auth, health, jobs, tokens

    for module in (auth, tokens, jobs, health):
        app.register_blueprint(module.bp)


def register_errorhandlers(app: Flask) -> None:
    from werkzeug.exceptions import HTTPException

    from .api.errors import APIError, handle_api_error, handle_http_exception
    from .db import close_conn
    from .intake import remove_staging

    app.register_error_handler(APIError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.teardown_appcontext(close_conn)

    @app.teardown_request
    def _remove_staged_uploads(exc=None):
        for upload in request.files.values() if "files" in request.__dict__ else ():
            upload.close()
        remove_staging(request.environ)


def register_commands(app: Flask) -> None:
    from .commands import tokens_cli

    app.cli.add_command(tokens_cli)
