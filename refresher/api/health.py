"""GET /api/health and GET /api/openapi.json: open to everyone."""

from __future__ import annotations

import os
import time

from flask import Blueprint

from .. import __version__
from ..auth import token_auth
from ..extensions import refresher
from ..media import ffmpeg
from ..storage import StorageError
from ..store import Error as StoreError
from .openapi import spec

bp = Blueprint("health", __name__, url_prefix="/api")

_DISK_CACHE_SECONDS = 10.0
_disk_cache: dict = {"at": 0.0, "used": 0, "reachable": True}


def _used_bytes(storage) -> tuple[int, bool]:
    """What the stored files take (counted at most every 10 s), and whether
    the storage answered when last asked."""
    if time.monotonic() - _disk_cache["at"] > _DISK_CACHE_SECONDS:
        try:
            _disk_cache.update(at=time.monotonic(), used=storage.used_bytes(), reachable=True)
        except (OSError, StorageError):  # out of reach: the last figure, asked again next time
            _disk_cache.update(at=time.monotonic(), reachable=False)
    return _disk_cache["used"], _disk_cache["reachable"]


@bp.get("/health")
@token_auth.login_required(optional=True)
def health():
    """200 while this process can serve requests, 503 (`degraded`, with the
    reason) when it cannot: its database, file storage or ffmpeg unusable, or
    the supervisor it runs itself down. A web process that encodes nothing
    (ENCODE_WORKERS=0) stays 200 when no worker host is up, and says so in
    `warnings`: a load balancer keeps it in rotation, and jobs wait. Machine
    details (the ffmpeg build, host names, disk figures) only with a token."""
    service = refresher()
    settings = service.settings
    problems: list[str] = []
    warnings: list[str] = []
    try:
        ffmpeg_version = ffmpeg.version(service.ffmpeg)
    except (OSError, ValueError, RuntimeError) as exc:
        ffmpeg_version = None
        problems.append(f"ffmpeg cannot run: {exc}")
    if not os.access(settings.data_dir, os.W_OK):
        problems.append("the data directory is not writable")
    used, reachable = _used_bytes(service.storage)
    if not reachable:
        problems.append("the file storage cannot be reached")
    try:
        live = service.store.live_hosts(time.time(), settings.host_timeout_seconds)
        queue = service.store.queue_counts()
    except StoreError as exc:
        live, queue = [], {"queued": 0, "processing": 0}
        problems.append(f"the database cannot be used: {str(exc).splitlines()[0][:200]}")
    control = service.control
    if settings.encode_workers > 0:  # this process runs a supervisor of its own
        supervisor = "not running"
        if control is not None and control.supervisor_alive():
            # standby: another server's supervisor owns DATA_DIR and runs the jobs
            supervisor = "standby" if control.supervisor_standby() else "running"
        else:
            problems.append("no supervisor is running, so jobs are not processed")
    else:
        supervisor = "elsewhere"  # worker processes encode
        if not live:
            warnings.append("no worker host is running: jobs wait in the queue until one starts")
    body: dict = {
        "status": "degraded" if problems else "ok",
        "version": __version__,
        "supervisor": supervisor,
        "queue": queue,
        "warnings": warnings,
    }
    if token_auth.current_user() is not None:
        body.update(
            ffmpeg=ffmpeg_version,
            hosts=[host["id"] for host in live],
            disk={"usedBytes": used, "limitBytes": settings.storage_limit_bytes},
        )
    if problems:
        body["reason"] = "; ".join(problems)
    return body, 503 if problems else 200


@bp.get("/openapi.json")
def openapi():
    return spec()
