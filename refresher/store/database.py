"""Connections: which engine a database URL means, its connection pool, and
the transactions every query of the store runs in.

`Database` is what each part of the store is made on (see `Store`): one
engine and pool per database per process, reads without a transaction,
writes in one (`BEGIN IMMEDIATE` on SQLite, so two writers never deadlock on
a lock upgrade; row locks on PostgreSQL).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import secrets as random_secrets
import select as select_module
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

Error = sa.exc.SQLAlchemyError  # what a caller catches when the database fails
OperationalError = sa.exc.OperationalError

log = logging.getLogger(__name__)

# Room kept beside the SQLite database for the writes that must work on a
# full disk (`through_a_full_disk`). A sign-out, a revoked token or a deleted
# job writes a few pages to the write-ahead log, and the log, once grown,
# is written over again after each checkpoint: a few megabytes suffice.
RESERVE_BYTES = 4 * 1024 * 1024

# PostgreSQL advisory lock keys of this service, all in one place so that no
# two uses share one.
MIGRATION_LOCK = 7_402_118_001
JOB_CREATION_LOCK = 7_402_118_002
CLUSTER_LOCKS = {"cleanup": 7_402_118_010}


def database_url(url_or_path: str | Path) -> str:
    """A SQLAlchemy URL: a plain path means SQLite; postgres:// (what platforms
    hand out) and postgresql:// mean PostgreSQL through psycopg 3."""
    text = str(url_or_path)
    for prefix in ("postgres://", "postgresql://"):
        if text.startswith(prefix):
            return "postgresql+psycopg://" + text[len(prefix) :]
    if text.startswith(("postgresql+", "sqlite:")):
        return text
    return f"sqlite:///{Path(text).resolve()}"


def disk_is_full(exc: BaseException) -> bool:
    """Whether a database error is its disk being full (SQLite's SQLITE_FULL,
    PostgreSQL's disk_full)."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or getattr(orig, "sqlstate", None) == "53100"


class DiskReserve:
    """A file of RESERVE_BYTES beside the SQLite database, given back when the
    disk fills so that the writes that must work still can (sign-out, a
    revoked or new token, a deleted or cancelled job), and made again once
    the disk has room (`keep`: at each start and each cleanup pass). Every
    process on the database shares the one file."""

    def __init__(self, database: str | None):
        self.path = Path(database + "-reserve") if database and database != ":memory:" else None

    def keep(self) -> bool:
        """Make the reserve if it is missing and the disk has room for it with
        as much to spare; whether it is there."""
        if self.path is None:
            return False
        if self.path.exists():
            return True
        try:
            if shutil.disk_usage(self.path.parent).free < 2 * RESERVE_BYTES:
                return False
            part = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")  # processes may make it at once
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)  # blocks of its own, not a sparse file
            finally:
                os.close(fd)
            os.replace(part, self.path)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.warning("no disk reserve beside the database: %s", exc)
            self.path.with_name(f"{self.path.name}.{os.getpid()}.part").unlink(missing_ok=True)
            return False
        log.info("%d MB kept in %s for the writes that must work on a full disk", RESERVE_BYTES >> 20, self.path)
        return True

    def give_back(self) -> bool:
        """Delete the reserve; whether there was one to give."""
        if self.path is None:
            return False
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("the disk is full: the %d MB kept beside the database were given back", RESERVE_BYTES >> 20)
        return True


P = ParamSpec("P")
R = TypeVar("R")


def through_a_full_disk(method: Callable[P, R]) -> Callable[P, R]:
    """For a store method whose write must work on a full disk: when the
    database's disk is full, the reserve is given back and the write tried
    once more (every other write fails, and the web answers 507)."""

    @functools.wraps(method)
    def write(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except OperationalError as exc:
            database = args[0]
            if not (disk_is_full(exc) and isinstance(database, Database) and database.reserve.give_back()):
                raise
        return method(*args, **kwargs)

    return write


def shown_url(url_or_path: str | Path) -> str:
    """The database as a message or a log line may name it: a SQLite file's
    path, else the URL without its password (in the user part or, as libpq
    also takes it, a `password` parameter)."""
    url = sa.engine.make_url(database_url(url_or_path))
    if url.get_backend_name() == "sqlite":
        return url.database or str(url_or_path)
    return url.difference_update_query(["password"]).render_as_string(hide_password=True)


def new_id() -> str:
    """An opaque, URL-safe id (72 random bits). Never starts with '-' or '_',
    so it cannot pass for an option on a command line."""
    while True:
        candidate = random_secrets.token_urlsafe(9)
        if candidate[0] not in "-_":
            return candidate


def _sqlite_engine(url: str) -> Engine:
    engine = sa.create_engine(
        url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=8, max_overflow=32
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy says BEGIN, not the driver
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: str) -> Engine:
    # Connections beyond pool_size are closed as soon as they are returned, so
    # a web worker (32 threads) with more requests at once than that opened a
    # new server process per request in every burst: the pool keeps 20; at
    # most 25 per process, as before.
    engine = sa.create_engine(url, pool_size=20, max_overflow=5)

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, _record, _proxy):
        # Instead of pool_pre_ping's round trip on every checkout: an idle
        # connection has nothing to read unless the server ended it (a
        # restart, pg_terminate_backend: an error message, then EOF), or it
        # is closed already. Such a connection is replaced before use.
        if dbapi_connection.closed or select_module.select([dbapi_connection.fileno()], [], [], 0)[0]:
            raise sa.exc.DisconnectionError("the server closed this connection")

    return engine


def for_update(conn: Connection, statement):
    """SELECT … FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already
    holds the whole database."""
    return statement.with_for_update() if conn.dialect.name == "postgresql" else statement


class ChangeWatch:
    """Says whether the database may have changed since it last looked, so the
    supervisor's loop can skip queries whose answer cannot have changed.

    On SQLite it reads `PRAGMA data_version` on a connection of its own: the
    number moves whenever any other connection commits — another process's,
    or another of this process's own — and reading it costs microseconds,
    not a query. Elsewhere (PostgreSQL, where other hosts write too) the
    answer is always yes."""

    def __init__(self, path: str | None):
        self._conn = None
        self._version = None
        if path and path != ":memory:":
            self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)

    def changed(self) -> bool:
        if self._conn is None:
            return True
        try:
            # (read to the end, so no read transaction stays open on it)
            [(version,)] = self._conn.execute("PRAGMA data_version").fetchall()
        except sqlite3.Error:
            return True
        changed, self._version = version != self._version, version
        return changed

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Database:
    """One database: its engine (and connection pool), and the transactions
    that the store's queries run in."""

    _shared: dict[tuple[int, str], Database] = {}

    @classmethod
    def shared(cls, url_or_path: str | Path):
        """One store (one connection pool) per database per process."""
        key = (os.getpid(), database_url(url_or_path))
        if key not in cls._shared:
            cls._shared[key] = cls(url_or_path)
        return cls._shared[key]

    def __init__(self, url_or_path: str | Path):
        self.url = database_url(url_or_path)
        if self.url.startswith("sqlite:"):
            self.engine = _sqlite_engine(self.url)
        else:
            self.engine = _postgres_engine(self.url)
        self.dialect = self.engine.dialect.name
        self.reserve = DiskReserve(self.engine.url.database if self.dialect == "sqlite" else None)

    def close(self) -> None:
        self.engine.dispose()

    def watch_changes(self) -> ChangeWatch:
        """A `ChangeWatch` on this database (see there)."""
        return ChangeWatch(self.engine.url.database if self.dialect == "sqlite" else None)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def upsert(self, table: Table):
        """INSERT that takes ON CONFLICT clauses, in this database's dialect."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)
