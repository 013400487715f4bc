"""The web application: `create_app` is the table of contents, where HTTP
ends and the rest begins.

It never starts the supervisor, its encode workers or the scheduler —
gunicorn's master (`config/gunicorn.conf.py`), `python app.py` or the worker
process type does that, once per host, and hands the control block in.
"""

from __future__ import annotations


from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from flask_cors import CORS
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from .settings import Settings, load_settings

from . import admin, contract, logs, startup, storage, transfers, web
from .api import errors, health, jobs, resumable, sessions, tokens, uploads
from .auth import load_secrets
from .engine.control import ControlBlock
from .errors import Rejected
from .extensions import Refresher, limiter
from .media import ffmpeg
from .storage import StorageError
from .store import OperationalError as StoreOperationalError
from .transfers import ClientSlots, SlowReaders

SMALL_BODY_LIMIT = 64 * 1024  # every route but the upload takes a small JSON or form body
MAX_FORM_PARTS = 50  # parts of a form; an upload takes this many text fields besides its files
TUS_REQUEST_HEADERS = ["Tus-Resumable", "Upload-Length", "Upload-Offset", "Upload-Metadata"]
TUS_RESPONSE_HEADERS = [
    *TUS_REQUEST_HEADERS,
    "Upload-Expires",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
]


class _JSONInFieldOrder(DefaultJSONProvider):
    sort_keys = False  # keep the documented field order


def create_app(settings: Settings | None = None, control: ControlBlock | None = None) -> Flask:
    """`control` is this host's control block, where a supervisor runs here."""
    settings = settings if settings is not None else load_settings()
    app = Flask(__name__)
    configure(app, settings, control)
    register_blueprints(app)
    register_extensions(app)
    register_request_limits(app)
    register_errorhandlers(app)
    app.cli.add_command(admin.tokens_cli)
    app.cli.add_command(admin.password_cli)
    return app


def configure(app: Flask, settings: Settings, control: ControlBlock | None) -> None:
    store = startup.open_store(settings)
    password, token_secret = load_secrets(settings, store)
    logs.configure(settings.log_level)  # (after the store: not a line per check it makes)
    try:
        binary = ffmpeg.resolve_binary(settings.ffmpeg_binary)
    except ffmpeg.FFmpegNotFound:
        binary = settings.ffmpeg_binary or "ffmpeg-missing"  # /api/health reports it as degraded
    app.extensions["refresher"] = Refresher(
        settings=settings,
        store=store,
        storage=storage.for_settings(settings),
        ffmpeg=binary,
        control=control,
        password=password,
        token_secret=token_secret,
        downloads=ClientSlots(settings.data_dir / "run" / "clients", "download", settings.downloads_per_client),
        streams=ClientSlots(settings.data_dir / "run" / "clients", "stream", transfers.STREAMS_PER_CLIENT),
        slow_readers=SlowReaders(settings.min_download_kbps * 1024, settings.slow_download_seconds),
    )
    app.request_class = uploads.UploadRequest
    app.config.update(
        SECRET_KEY=token_secret,
        # the whole request: every file at its limit, plus the form fields
        MAX_CONTENT_LENGTH=contract.MAX_FILES * settings.max_upload_bytes + 1024 * 1024,
        MAX_FORM_PARTS=MAX_FORM_PARTS,
        RATELIMIT_STORAGE_URI=f"refresher-store://{settings.database}",
    )
    app.json = _JSONInFieldOrder(app)
    # "/api//jobs" is a 404, not werkzeug's redirect to an absolute URL built
    # from the Host header, which the client chose. (Set before any route is
    # added: rules copy it.)
    app.url_map.merge_slashes = False
    if settings.trust_proxy_hops:
        # Behind a router (Heroku's adds one hop): the client's address is in
        # X-Forwarded-For, which login throttling must use.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]  # Flask's documented way to wrap it in middleware
            app.wsgi_app, x_for=settings.trust_proxy_hops, x_proto=settings.trust_proxy_hops
        )


def register_blueprints(app: Flask) -> None:
    for module in (sessions, tokens, jobs, resumable, health):
        app.register_blueprint(module.bp)
    app.register_blueprint(web.bp)


def register_extensions(app: Flask) -> None:
    limiter.init_app(app)
    for blueprint in (
        jobs.bp,
        resumable.bp,
        tokens.bp,
        health.bp,
    ):  # only sign-in is throttled; skip the check elsewhere
        limiter.exempt(blueprint)
    origins = app.extensions["refresher"].settings.cors_origins
    if origins:  # CORS stays off unless CORS_ORIGINS names who may call the API
        CORS(
            app,
            resources={r"/api/*": {"origins": list(origins)}},
            supports_credentials=False,
            allow_headers=["Authorization", "Content-Type", *TUS_REQUEST_HEADERS],
            expose_headers=["Location", "Retry-After", *TUS_RESPONSE_HEADERS],
            methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
            max_age=600,
        )


def register_request_limits(app: Flask) -> None:
    """Only the upload routes may receive a large body (the multipart form,
    and a resumable upload's bytes); everything else is capped small, so a
    huge JSON document cannot eat a worker's memory."""

    @app.before_request
    def _cap_request_body():
        if request.endpoint != "jobs.create_job" and request.endpoint not in resumable.RECEIVING_ENDPOINTS:
            request.max_content_length = SMALL_BODY_LIMIT


def register_errorhandlers(app: Flask) -> None:
    app.register_error_handler(Rejected, errors.handle_rejected)
    app.register_error_handler(HTTPException, errors.handle_http_exception)
    app.register_error_handler(OSError, errors.handle_disk_full)
    app.register_error_handler(StoreOperationalError, errors.handle_database_error)
    app.register_error_handler(StorageError, errors.handle_storage_error)
    app.teardown_request(uploads.remove_staging)
