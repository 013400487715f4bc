"""PostgreSQL's announcements of accepted cancels, heard on a connection of
their own (not one of the pool's: it stays open, LISTENing, for as long as
the supervisor runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.engine import URL, make_url

from .database import Database

if TYPE_CHECKING:
    import psycopg

CANCEL_CHANNEL = "refresher_cancel"  # NOTIFY channel of accepted cancels; payload "<seq> <id>"
LISTENER_NAME = "refresher cancel listener"  # its connections' application_name

# keepalives: a connection silently lost over TCP is noticed in seconds
_LISTENER_OPTIONS: dict[str, str | int] = {
    "application_name": LISTENER_NAME,
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


def connection_params(url: str | URL) -> dict[str, str | int]:
    """libpq's connection parameters for a SQLAlchemy PostgreSQL URL: its
    parts, decoded, under libpq's names (user, password, host, port,
    dbname), and its query string as it stands (sslmode, a socket folder as
    host, …). A key the query gives more than once becomes libpq's
    comma-separated list (host=a&host=b: host=a,b)."""
    url = make_url(url)
    params: dict[str, str | int] = url.translate_connect_args(username="user", database="dbname")
    for key, value in url.query.items():
        params[key] = ",".join(value) if isinstance(value, tuple) else value
    return params


class CancelListener:
    """A connection of its own that LISTENs for accepted cancels (PostgreSQL
    only): `request_cancel` announces each one on CANCEL_CHANNEL in its own
    transaction, so it arrives once it is committed, and not before."""

    def __init__(self, store: Database):
        self.store = store
        self.conn: psycopg.Connection | None = None

    def connect(self) -> None:
        # (psycopg is imported where PostgreSQL is used, not by every process that imports the store)
        import psycopg
        from psycopg.conninfo import make_conninfo

        self.close()
        conninfo = make_conninfo("", **{**connection_params(self.store.url), **_LISTENER_OPTIONS})
        self.conn = conn = psycopg.connect(conninfo, autocommit=True)
        conn.execute(f"LISTEN {CANCEL_CHANNEL}")

    def wait(self, timeout: float) -> list[tuple[int, str]]:
        """(seq, job id) of the cancels announced within `timeout` seconds;
        returns at the first ones. Raises psycopg.Error when the connection
        is lost."""
        assert self.conn is not None, "connect() first"
        cancels = []
        for note in self.conn.notifies(timeout=timeout, stop_after=1):
            seq, _, job_id = note.payload.partition(" ")
            if note.channel == CANCEL_CHANNEL and seq.isdigit():
                cancels.append((int(seq), job_id))
        return cancels

    def ping(self) -> None:
        assert self.conn is not None, "connect() first"
        self.conn.execute("SELECT 1")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()  # (it raises nothing, even on a connection the server has ended)
            self.conn = None
