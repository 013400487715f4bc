"""A storage backend for the `limits` library (used by Flask-Limiter) that
keeps its counters in the service's own database.

Flask-Limiter's memory storage counts per process, so with several gunicorn
workers a client would get N times the allowed failed logins, and a restart
would forget them. Counters in the store are shared by every worker (and
every host on PostgreSQL) and survive restarts; only failed logins write.

Named `StoreCounters`, not a Storage of its own: `refresher.storage` is where
the service's files live. Selected with RATELIMIT_STORAGE_URI = "refresher-store://" + the database
(what Settings.database names).
"""

from __future__ import annotations

import time

from limits.storage import Storage

from .store import Error, Store


class StoreCounters(Storage):
    STORAGE_SCHEME = ["refresher-store"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.store = Store.shared(uri.split("://", 1)[1])

    @property
    def base_exceptions(self):
        return Error

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.store.rate_limit_incr(key, expiry, amount, time.time())

    def get(self, key: str) -> int:
        return self.store.rate_limit_get(key, time.time())[0]

    def get_expiry(self, key: str) -> float:
        return self.store.rate_limit_get(key, time.time())[1]

    def check(self) -> bool:
        try:
            self.store.rate_limit_get("health", time.time())
            return True
        except Error:
            return False

    def reset(self) -> int | None:
        return self.store.rate_limit_clear()

    def clear(self, key: str) -> None:
        self.store.rate_limit_clear(key)
