"""Security headers on every response: pages, static files and the API.

The policy allows scripts, styles, media and connections from this origin
only — and images and videos from the bucket's, where outputs and
thumbnails are links into object storage; pages never use inline script, so
a name that slipped through escaping still could not run.
"""

from __future__ import annotations

import functools

from ..extensions import refresher
from . import bp


@functools.lru_cache(maxsize=4)
def content_security_policy(file_origin: str | None = None) -> str:
    files = f" {file_origin}" if file_origin else ""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' data: blob:{files}",
            f"media-src 'self' blob:{files}",
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


CONTENT_SECURITY_POLICY = content_security_policy()

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@bp.after_app_request
def add_security_headers(response):
    response.headers.setdefault("Content-Security-Policy", content_security_policy(refresher().storage.file_origin()))
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
