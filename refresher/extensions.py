"""Flask extensions, created unbound and initialised in create_app.

The rate limiter keeps its counters in the service's SQLite database
(refresher/ratelimit.py), so every gunicorn worker shares them and a restart
does not forget them; create_app points RATELIMIT_STORAGE_URI at the store.
"""
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from . import ratelimit  # noqa: F401  registers the refresher-sqlite:// storage

limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)
