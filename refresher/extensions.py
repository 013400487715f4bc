"""Flask extensions, created unbound and initialised in create_app, and the
service's own state that every request reaches through the app.

The rate limiter keeps its counters in the service's database
(refresher/ratelimit.py), so every gunicorn worker — and with PostgreSQL
every host — shares them and a restart does not forget them.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from .settings import Settings

from . import ratelimit  # noqa: F401  registers the refresher-store:// storage
from .engine.control import ControlBlock
from .storage import Storage
from .store import Store
from .transfers import ClientSlots, SlowReaders

limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)


@dataclass
class Refresher:
    """What the views need: in `app.extensions["refresher"]`."""

    settings: Settings
    store: Store
    storage: Storage  # where the jobs' files live
    ffmpeg: str  # the ffmpeg binary every call uses
    control: ControlBlock | None  # None where no supervisor runs on this host
    password: str
    token_secret: str
    downloads: ClientSlots  # what each client runs at once
    streams: ClientSlots
    slow_readers: SlowReaders


def refresher() -> Refresher:
    return current_app.extensions["refresher"]
