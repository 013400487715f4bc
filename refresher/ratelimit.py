"""A storage backend for the `limits` library (used by Flask-Limiter) that
keeps its counters in the service's SQLite database.

Flask-Limiter's memory storage counts per process, so with several gunicorn
workers a client would get N times the allowed failed logins, and a restart
would forget them. Counters in the store are shared by every worker and
survive restarts; only failed logins write, so the cost is nil.

Selected with RATELIMIT_STORAGE_URI = "refresher-sqlite:///<path to the db>".
"""
from __future__ import annotations

import sqlite3
import threading
import time

from limits.storage import Storage

from . import store


class SQLiteStorage(Storage):
    STORAGE_SCHEME = ["refresher-sqlite"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.db_path = uri.split("://", 1)[1]
        self._local = threading.local()

    @property
    def base_exceptions(self):
        return sqlite3.Error

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = store.connect(self.db_path)
        return conn

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return store.rate_limit_incr(self._conn(), key, expiry, amount, time.time())

    def get(self, key: str) -> int:
        return store.rate_limit_get(self._conn(), key, time.time())[0]

    def get_expiry(self, key: str) -> float:
        return store.rate_limit_get(self._conn(), key, time.time())[1]

    def check(self) -> bool:
        try:
            self._conn().execute("SELECT 1")
            return True
        except sqlite3.Error:
            return False

    def reset(self) -> int | None:
        return store.rate_limit_clear(self._conn())

    def clear(self, key: str) -> None:
        store.rate_limit_clear(self._conn(), key)
