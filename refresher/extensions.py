"""Flask extensions, created unbound and initialised in create_app."""
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

limiter = Limiter(key_func=get_remote_address, default_limits=[], storage_uri="memory://",
                  headers_enabled=True)
