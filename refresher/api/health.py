"""GET /api/health and GET /api/openapi.json: open to everyone."""
from __future__ import annotations

import os
import time

from flask import Blueprint

from .. import __version__
from ..extensions import refresher
from ..media import ffmpeg
from ..storage import StorageError
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
def health():
    service = refresher()
    settings = service.settings
    problems = []
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
    control = service.control
    live = service.store.live_hosts(time.time(), settings.host_timeout_seconds)
    supervisor = "not running"
    if control is not None and control.supervisor_alive():
        # standby: another server's supervisor owns DATA_DIR and runs the jobs
        supervisor = "standby" if control.supervisor_standby() else "running"
    elif control is None and live:
        supervisor = "elsewhere"  # a web-only process; worker processes encode
    if supervisor == "not running":
        problems.append("no supervisor is running, so jobs are not processed")
    body = {
        "status": "degraded" if problems else "ok",
        "version": __version__,
        "ffmpeg": ffmpeg_version,
        "supervisor": supervisor,
        "hosts": [host["id"] for host in live],
        "queue": service.store.queue_counts(),
        "disk": {"usedBytes": used, "limitBytes": settings.storage_limit_bytes},
    }
    if problems:
        body["reason"] = "; ".join(problems)
    return body, 503 if problems else 200


@bp.get("/openapi.json")
def openapi():
    return spec()
