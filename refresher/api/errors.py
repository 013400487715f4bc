"""Every HTTP error of the API goes through `error_response`, so every error
body has the same shape: {"error": "<a sentence a person can act on>", ...}.
The service's own layers raise `Rejected`; Werkzeug raises its HTTP errors;
both end here."""

from __future__ import annotations

import errno
import logging

from flask import current_app, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import Rejected
from ..store import disk_is_full


log = logging.getLogger("refresher.uploads")


def error_response(code: int, message: str, **extra):
    if has_request_context() and (request.endpoint == "jobs.create_job" or request.path.startswith("/api/uploads")):
        # every refused upload, with its reason, for whoever runs the service
        log.info("upload refused: %d %s (%s from %s)", code, message, request.path, request.remote_addr)
    response = jsonify({"error": message, **extra})
    response.status_code = code
    if code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="Video Refresher"'
    if "retryAfter" in extra:
        response.headers["Retry-After"] = str(extra["retryAfter"])
    return response


_MESSAGES = {
    400: "the request is malformed",
    404: "no such resource",
    405: "this method is not allowed here",
    413: "the request is too large",
    415: "unsupported media type",
    429: "too many requests; try again later",
}


def handle_rejected(exc: Rejected):
    return error_response(exc.code, exc.message, **exc.extra)


def handle_http_exception(exc: HTTPException):
    """Werkzeug's own errors (404 routing, 405, 413 past MAX_CONTENT_LENGTH …) as JSON."""
    known = _MESSAGES.get(exc.code) if exc.code is not None else None
    message = known or (exc.description or exc.name).rstrip(".")
    if exc.code == 413:
        if request.endpoint == "jobs.create_job":
            limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
            message = (
                f"the request is larger than the limit of {limit / 1024 / 1024:.0f} MB (10 files of MAX_UPLOAD_MB each)"
            )
        else:
            message = f"the request body is too large: at most {(request.max_content_length or 0) // 1024} KB here"
    response = error_response(exc.code or 500, message)
    for key, value in exc.get_headers() if hasattr(exc, "get_headers") else []:
        if key.lower() not in ("content-type", "content-length"):
            response.headers[key] = value
    return response


def handle_storage_error(exc):
    """Object storage that does not answer (or refuses): 503, and the
    service carries on; the log has the storage's own words."""
    current_app.logger.error("%s", exc)
    return error_response(503, "the file storage cannot be reached; try again later", retryAfter=30)


DISK_FULL = "the server's disk is full; try again later or ask for space to be freed"


def handle_disk_full(exc: OSError):
    """A full disk while receiving an upload: 507, and the service carries on.
    Any other OSError is a real bug and is re-raised."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        raise exc
    return error_response(507, DISK_FULL)


def handle_database_error(exc: Exception):
    """A write the database's full disk refused: 507, as the contract says
    (sign-out, tokens and deleting or cancelling a job are written through
    the reserve first: `store.through_a_full_disk`). Anything else is a real
    error and is re-raised."""
    if not disk_is_full(exc):
        raise exc
    current_app.logger.error("a write was refused: the database's disk is full")
    return error_response(507, DISK_FULL)
