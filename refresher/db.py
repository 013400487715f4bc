"""One store connection per request, closed when the request ends."""
from __future__ import annotations

import sqlite3

from flask import current_app, g

from . import store


def get_conn() -> sqlite3.Connection:
    if "db" not in g:
        g.db = store.connect(current_app.config["SETTINGS"].db_path)
    return g.db


def close_conn(exc: BaseException | None = None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()
