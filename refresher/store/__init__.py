"""The store: every SQL statement of the service, on SQLite or PostgreSQL.

SQLAlchemy Core builds the statements, so one query serves both engines;
Alembic keeps the schema (`migrations/`), and `Store.migrate()` brings any
database up to date, safely from many processes at once. The store decides
nothing: a transition loads the current state under a lock, asks
`refresher.rules` what follows, and writes exactly that.

Each process makes its own `Store` (after any fork): web workers, the
supervisor, the cleanup daemon. Reads run without a transaction; writes run
in one (`BEGIN IMMEDIATE` on SQLite, so two writers never deadlock on a lock
upgrade; row locks on PostgreSQL).
"""
from __future__ import annotations

import json
import os
import secrets as random_secrets
import select as select_module
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import delete, event, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from .. import rules
from .schema import (api_tokens, ended_sessions, hosts, jobs, metadata, rate_limits, secrets, source_files,
                     variations)

Error = sa.exc.SQLAlchemyError          # what a caller catches when the database fails
OperationalError = sa.exc.OperationalError

_MIGRATION_LOCK = 7_402_118_001          # PostgreSQL advisory lock keys of this service
_JOB_CREATION_LOCK = 7_402_118_002
_CLUSTER_LOCKS = {"cleanup": 7_402_118_010}
_LEGACY_SCHEMA_VERSION = 4               # the last version of the pre-Alembic schema
EVERY_SESSION = "*"                      # the ended_sessions row that ends every session begun before it
CANCEL_CHANNEL = "refresher_cancel"      # PostgreSQL NOTIFY channel of accepted cancels; payload "<seq> <id>"
LISTENER_NAME = "refresher cancel listener"  # its connections' application_name

# A job with its files and their variations, one row per variation (files
# without any still come once): built once, so a status poll spends no time
# building it again.
_WHOLE_JOB = (select(*jobs.c, *source_files.c, *variations.c)
              .select_from(jobs.outerjoin(source_files, source_files.c.job_id == jobs.c.id)
                           .outerjoin(variations, variations.c.file_id == source_files.c.id))
              .where(jobs.c.id == sa.bindparam("job_id"))
              .order_by(source_files.c.position, variations.c.variation_index))
# Its rows' keys, as `_mapping` makes them (plain `str`, not SQLAlchemy's own).
_JOB_KEYS, _FILE_KEYS, _VARIATION_KEYS = (tuple(str(c.name) for c in table.c)
                                          for table in (jobs, source_files, variations))
# Whether a session was ended, on its own or with every other: asked on every request.
_ENDED_SESSIONS = (select(ended_sessions.c.id, ended_sessions.c.ended_at)
                   .where(ended_sessions.c.id.in_([sa.bindparam("session_id"), EVERY_SESSION])))


class JobNotStarted(Exception):
    """The next variation to claim belongs to a job still queued."""

    def __init__(self, job: dict):
        super().__init__(f"job {job['id']} is queued")
        self.job = job


class QueueFull(Exception):
    def __init__(self, unfinished: int):
        super().__init__(f"{unfinished} unfinished jobs")
        self.unfinished = unfinished


def database_url(url_or_path: str | Path) -> str:
    """A SQLAlchemy URL: a plain path means SQLite; postgres:// (what platforms
    hand out) and postgresql:// mean PostgreSQL through psycopg 3."""
    text = str(url_or_path)
    for prefix in ("postgres://", "postgresql://"):
        if text.startswith(prefix):
            return "postgresql+psycopg://" + text[len(prefix):]
    if text.startswith(("postgresql+", "sqlite:")):
        return text
    return f"sqlite:///{Path(text).resolve()}"


def new_id() -> str:
    """An opaque, URL-safe id (72 random bits). Never starts with '-' or '_',
    so it cannot pass for an option on a command line."""
    while True:
        candidate = random_secrets.token_urlsafe(9)
        if candidate[0] not in "-_":
            return candidate


def _sqlite_engine(url: str) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                              pool_size=8, max_overflow=32)

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


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "refresher.store:migrations")
    config.attributes["connection"] = connection
    return config


def _mapping(row) -> dict | None:
    """A row as a plain dict. Its keys are made plain `str`: SQLAlchemy names
    columns with a `str` subclass of its own, and a task pickled down an
    encode worker's pipe with such keys would make the worker import
    SQLAlchemy just to read it."""
    return {str(key): value for key, value in row._mapping.items()} if row is not None else None


def _variation_state(row: Mapping) -> rules.Variation:
    return rules.Variation(status=row["status"], attempts=row["attempts"], failures=row["failures"],
                           interruptions=row["interruptions"], progress=row["progress"], error=row["error"])


def _job_state(row: Mapping) -> rules.Job:
    return rules.Job(status=row["status"], cancel_requested=row["cancel_requested_at"] is not None,
                     progress=row["progress"], error=row["error"])


def _variation_fields(state: rules.Variation) -> dict:
    return {"status": state.status, "attempts": state.attempts, "failures": state.failures,
            "interruptions": state.interruptions, "progress": state.progress, "error": state.error}


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


class Store:
    _shared: dict[tuple[int, str], "Store"] = {}

    @classmethod
    def shared(cls, url_or_path: str | Path) -> "Store":
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

    def close(self) -> None:
        self.engine.dispose()

    def watch_changes(self) -> ChangeWatch:
        """A `ChangeWatch` on this database (see there)."""
        return ChangeWatch(self.engine.url.database if self.dialect == "sqlite" else None)

    # --- transactions ---------------------------------------------------------------
    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def _locked(self, statement):
        """SELECT … FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already
        holds the whole database."""
        return statement.with_for_update() if self.dialect == "postgresql" else statement

    # --- schema -------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest revision. Safe from many processes at
        once: one migrates under a lock, the others find it done."""
        if self.dialect == "sqlite":
            with self.reading() as conn:
                self._use_wal(conn)
        with self.engine.connect() as conn:
            config = _alembic_config(conn)
            head = ScriptDirectory.from_config(config).get_current_head()
            if MigrationContext.configure(conn).get_current_revision() == head:
                conn.rollback()
                return
            conn.rollback()
            with conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
                inspector = sa.inspect(conn)
                if not inspector.get_table_names():
                    # A new database: the newest schema at once, as the
                    # migrations would build it (a test holds the two equal).
                    metadata.create_all(conn)
                    command.stamp(config, "head")
                    return
                if inspector.has_table("schema_version") and not inspector.has_table("alembic_version"):
                    self._adopt_legacy_schema(conn, config)
                command.upgrade(config, "head")

    def check_writable(self) -> None:
        """Raises the database's own error when it takes no writes (a
        read-only file or folder, a read-only server): writes a row and takes
        it back."""
        with self.engine.connect() as conn:
            transaction = conn.begin()
            try:
                conn.execute(insert(secrets).values(name=f"write-check-{new_id()}", value="", created_at=time.time()))
            finally:
                transaction.rollback()

    @staticmethod
    def _use_wal(conn: Connection, timeout: float = 30) -> None:
        """WAL lets readers and one writer work side by side; it stays set in the
        file. Several processes starting at once may race to switch it, and the
        switch answers "locked" at once instead of waiting: retry."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if conn.exec_driver_sql("PRAGMA journal_mode").scalar().lower() != "wal":
                    conn.exec_driver_sql("PRAGMA journal_mode = WAL")
                return
            except OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @staticmethod
    def _adopt_legacy_schema(conn: Connection, config: Config) -> None:
        """A database from before Alembic: its last schema is revision 0001."""
        version = conn.execute(sa.text("SELECT MAX(version) FROM schema_version")).scalar() or 0
        if version != _LEGACY_SCHEMA_VERSION:
            raise RuntimeError(f"the database has schema version {version}; this release can upgrade "
                               f"only version {_LEGACY_SCHEMA_VERSION}")
        command.stamp(config, "0001")
        conn.execute(sa.text("DROP TABLE schema_version"))

    # --- reading jobs ---------------------------------------------------------------------
    def get_job(self, job_id: str, conn: Connection | None = None) -> dict | None:
        if conn is not None:
            return _mapping(conn.execute(select(jobs).where(jobs.c.id == job_id)).first())
        with self.reading() as conn:
            return self.get_job(job_id, conn)

    def get_job_files(self, job_id: str, conn: Connection | None = None) -> list[dict]:
        if conn is None:
            with self.reading() as conn:
                return self.get_job_files(job_id, conn)
        rows = conn.execute(select(source_files).where(source_files.c.job_id == job_id)
                            .order_by(source_files.c.position)).all()
        files = [dict(r._mapping) for r in rows]
        for f in files:
            f["media"] = json.loads(f["media"])
        return files

    def get_job_variations(self, job_id: str, conn: Connection | None = None) -> list[dict]:
        if conn is None:
            with self.reading() as conn:
                return self.get_job_variations(job_id, conn)
        rows = conn.execute(
            select(variations).join(source_files, source_files.c.id == variations.c.file_id)
            .where(variations.c.job_id == job_id)
            .order_by(source_files.c.position, variations.c.variation_index)).all()
        found = [dict(r._mapping) for r in rows]
        for v in found:
            v["effects"] = json.loads(v["effects"])
        return found

    def get_job_whole(self, job_id: str) -> tuple[dict, list[dict], list[dict]] | None:
        """(job, files, variations), or None when there is no such job: what
        GET /api/jobs/<id> shows, in one statement (the job left-joined with
        its files and theirs with their variations), so a status poll costs
        one round trip besides its session check."""
        with self.reading() as conn:
            rows = conn.execute(_WHOLE_JOB, {"job_id": job_id}).all()
        if not rows:
            return None
        job = dict(zip(_JOB_KEYS, rows[0]))
        files: dict[str, dict] = {}
        found = []
        file_at, variation_at = len(_JOB_KEYS), len(_JOB_KEYS) + len(_FILE_KEYS)
        for r in rows:
            file_id = r[file_at]
            if file_id is not None and file_id not in files:
                files[file_id] = dict(zip(_FILE_KEYS, r[file_at:variation_at]))
                files[file_id]["media"] = json.loads(files[file_id]["media"])
            if r[variation_at] is not None:
                v = dict(zip(_VARIATION_KEYS, r[variation_at:]))
                v["effects"] = json.loads(v["effects"])
                found.append(v)
        return job, list(files.values()), found

    def get_variation(self, variation_id: str) -> dict | None:
        with self.reading() as conn:
            v = _mapping(conn.execute(select(variations).where(variations.c.id == variation_id)).first())
        if v is not None:
            v["effects"] = json.loads(v["effects"])
        return v

    def list_jobs(self, limit: int = 50, status: str | None = None) -> list[dict]:
        """Newest first, with the counts and file names the job list shows."""
        def variations_where(*conditions):
            return (select(func.count()).select_from(variations)
                    .where(variations.c.job_id == jobs.c.id, *conditions).scalar_subquery())

        query = select(
            jobs,
            select(func.count()).select_from(source_files).where(source_files.c.job_id == jobs.c.id)
            .scalar_subquery().label("total_videos"),
            variations_where().label("total_variations"),
            variations_where(variations.c.status == "completed").label("completed_variations"),
        ).order_by(jobs.c.created_at.desc(), jobs.c.seq.desc()).limit(limit)
        if status:
            query = query.where(jobs.c.status == status)
        with self.reading() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
            names: dict[str, list[str]] = {r["id"]: [] for r in rows}
            if names:
                for job_id, name in conn.execute(
                        select(source_files.c.job_id, source_files.c.name)
                        .where(source_files.c.job_id.in_(list(names)))
                        .order_by(source_files.c.job_id, source_files.c.position)):
                    names[job_id].append(name)
        for r in rows:
            r["file_names"] = names[r["id"]]
        return rows

    def queue_counts(self) -> dict:
        with self.reading() as conn:
            counts = dict(conn.execute(select(jobs.c.status, func.count()).where(
                jobs.c.status.in_(rules.UNFINISHED)).group_by(jobs.c.status)).all())
        return {"queued": counts.get("queued", 0), "processing": counts.get("processing", 0)}

    # --- creating and deleting jobs ----------------------------------------------------
    def create_job(self, job: dict, files: Iterable[dict], new_variations: Iterable[dict],
                   max_unfinished: int | None = None) -> None:
        """Insert a queued job with its source files and variations, all or
        nothing; QueueFull when `max_unfinished` jobs are already waiting or
        running (checked under the same lock as the insert, so a burst of
        uploads can never pass the cap together)."""
        with self.writing() as conn:
            if max_unfinished is not None:
                if self.dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _JOB_CREATION_LOCK})
                unfinished = conn.execute(select(func.count()).select_from(jobs)
                                          .where(jobs.c.status.in_(rules.UNFINISHED))).scalar()
                if unfinished >= max_unfinished:
                    raise QueueFull(unfinished)
            conn.execute(insert(jobs), [{**job, "status": "queued"}])
            conn.execute(insert(source_files),
                         [{**f, "job_id": job["id"], "media": json.dumps(f.get("media", {}))} for f in files])
            conn.execute(insert(variations),
                         [{"est_cost": 0, **v, "job_id": job["id"], "status": "queued",
                           "effects": json.dumps(v["effects"])} for v in new_variations])

    def delete_job(self, job_id: str) -> bool:
        with self.writing() as conn:
            return conn.execute(delete(jobs).where(jobs.c.id == job_id)).rowcount == 1

    # --- transitions ---------------------------------------------------------------------
    def _lock_job(self, conn: Connection, job_id: str) -> dict | None:
        return _mapping(conn.execute(self._locked(select(jobs).where(jobs.c.id == job_id))).first())

    def _settle(self, conn: Connection, job_id: str, now: float, ttl: float) -> str | None:
        """Give the job its final status if rules.settle says it has one."""
        job = self._lock_job(conn, job_id)
        if job is None:
            return None
        rows = conn.execute(select(variations).where(variations.c.job_id == job_id)).all()
        settlement = rules.settle(_job_state(job), [_variation_state(r._mapping) for r in rows])
        if settlement is None:
            return None
        fields = {"status": settlement.status, "progress": settlement.progress,
                  "finished_at": now, "expires_at": now + ttl}
        if settlement.status == "cancelled":
            fields["cancelled_at"] = job["cancel_requested_at"] or now
        if settlement.status == "failed":
            fields["error"] = settlement.error
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(**fields))
        return settlement.status

    def settle_job(self, job_id: str, now: float, ttl: float) -> str | None:
        with self.writing() as conn:
            return self._settle(conn, job_id, now, ttl)

    def request_cancel(self, job_id: str, now: float, ttl: float) -> dict | None:
        """Accept a cancel: no variation of the job starts any more, the queued
        ones are skipped, and the job settles at once if nothing of it runs.
        Returns the job as it now stands (None: no such job); raises
        rules.IllegalTransition when it has finished already."""
        with self.writing() as conn:
            job = self._lock_job(conn, job_id)
            if job is None:
                return None
            rules.request_cancel(_job_state(job))
            if job["cancel_requested_at"] is None:
                conn.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested_at=now))
            queued = conn.execute(select(variations).where(variations.c.job_id == job_id,
                                                            variations.c.status == "queued")).all()
            for row in queued:
                state = rules.skip_for_cancel(_variation_state(row._mapping))
                # still queued: a host may have claimed it since the SELECT (its flag stops it)
                conn.execute(update(variations).where(variations.c.id == row.id, variations.c.status == "queued")
                             .values(**_variation_fields(state), finished_at=now))
            self._settle(conn, job_id, now, ttl)
            job = self.get_job(job_id, conn)
            if self.dialect == "postgresql" and job["status"] not in rules.FINAL:
                # Delivered to every listening supervisor when, and only if, this commits.
                conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"),
                             {"channel": CANCEL_CHANNEL, "payload": f"{job['seq']} {job_id}"})
            return job

    def reopen_job(self, job_id: str, kind: str, now: float, ttl: float) -> dict | None:
        """Give a finished job work again: "retry" queues its failed variations
        (with their recorded effects), "resume" those a cancel left unmade.
        Finished variations stay. Returns the job as it now stands (None: no
        such job); raises rules.IllegalTransition, with the reason as its
        message, when the job is in the wrong state for it."""
        step, from_status = {"retry": (rules.retry, "failed"), "resume": (rules.resume, "cancelled")}[kind]
        with self.writing() as conn:
            job = self._lock_job(conn, job_id)
            if job is None:
                return None
            rows = [r._mapping for r in conn.execute(select(variations).where(variations.c.job_id == job_id))]
            states = [_variation_state(r) for r in rows]
            state = _job_state(job)
            reason = rules.can_retry(state, states) if kind == "retry" else rules.can_resume(state)
            if reason is not None:
                raise rules.IllegalTransition(reason)
            reopened = rules.reopen(state)
            after = []
            for row, before in zip(rows, states):
                if row["status"] == from_status:
                    before = step(before)
                    conn.execute(update(variations).where(variations.c.id == row["id"]).values(
                        **_variation_fields(before), finished_at=None, host=None, worker_pid=None,
                        ffmpeg_pid=None, dispatched_at=None))
                after.append(before)
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                status=reopened.status, error=reopened.error, cancel_requested_at=None, cancelled_at=None,
                finished_at=None, progress=rules.made_share(rules.count(after)), expires_at=now + ttl))
            return self.get_job(job_id, conn)

    def fail_queued_job(self, job_id: str, reason: str, now: float, ttl: float) -> bool:
        """A queued job that cannot run at all: it and its variations fail with `reason`."""
        with self.writing() as conn:
            job = self._lock_job(conn, job_id)
            if job is None:
                return False
            try:
                rules.fail_job(_job_state(job), reason)
            except rules.IllegalTransition:
                return False
            conn.execute(update(variations).where(variations.c.job_id == job_id, variations.c.status == "queued")
                         .values(status="failed", error=reason, finished_at=now))
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                status="failed", error=reason, finished_at=now, expires_at=now + ttl, progress=0))
            return True

    # --- the supervisor's side ---------------------------------------------------------------
    def _next_variation_query(self, *columns):
        """The variation that should run next, fairly between jobs: the job with
        the fewest variations running goes first, then the one that has had
        the fewest started, then the oldest — so jobs take turns, and a small
        job behind a big one gets the next free slot. Within a job, one
        variation of every source before the second of any (a cancel then
        leaves every source about as far), the costliest first among equals."""
        others = variations.alias("others")

        def of_this_job(*conditions):
            return (select(func.count()).select_from(others)
                    .where(others.c.job_id == variations.c.job_id, *conditions).scalar_subquery())

        running = of_this_job(others.c.status == "processing")
        started = of_this_job(others.c.status != "queued")
        return (select(*columns)
                .join(jobs, jobs.c.id == variations.c.job_id)
                .join(source_files, source_files.c.id == variations.c.file_id)
                .where(variations.c.status == "queued", jobs.c.status.in_(rules.UNFINISHED),
                       jobs.c.cancel_requested_at.is_(None))
                .order_by(running, started, jobs.c.seq, variations.c.variation_index, variations.c.est_cost.desc(),
                          source_files.c.position)
                .limit(1))

    def next_variation(self) -> dict | None:
        """The variation that should run next (see `_next_variation_query`), unclaimed."""
        query = self._next_variation_query(variations.c.id, variations.c.job_id, jobs.c.status.label("job_status"))
        with self.reading() as conn:
            return _mapping(conn.execute(query).first())

    def claim_next_variation(self, host: str, now: float) -> dict | None:
        """queued → processing for this host: the variation that should run
        next, picked and claimed in one transaction. On PostgreSQL the pick
        itself locks the row (`FOR UPDATE OF variations SKIP LOCKED`): a row
        another host is claiming at this moment is passed over for the next
        one, never picked again and again, and no host waits for another.
        The job's row is read, not locked, so a claim never waits behind a
        cancel (which locks the job, then its queued variations: a claim
        that wins that race is stopped by the cancel's flag like any running
        variation). Returns the task (the variation with its source's path
        and media), None when nothing can be claimed; raises JobNotStarted
        when the next variation's job is still queued: the caller checks
        its disk space and starts it (`start_job`) or fails it first."""
        query = self._next_variation_query(variations, jobs.c.status.label("job_status"), jobs.c.seq.label("job_seq"),
                                           source_files.c.upload_path, source_files.c.duration,
                                           source_files.c.media)
        if self.dialect == "postgresql":
            query = query.with_for_update(of=variations, skip_locked=True)
        with self.writing() as conn:
            row = _mapping(conn.execute(query).first())
            if row is None:
                return None
            if row["job_status"] == "queued":
                raise JobNotStarted(self.get_job(row["job_id"], conn))
            claimed = rules.claim(_variation_state(row), rules.Job(status=row["job_status"]))
            conn.execute(update(variations).where(variations.c.id == row["id"]).values(
                **_variation_fields(claimed), host=host, dispatched_at=now, worker_pid=None, ffmpeg_pid=None))
        return {**row, **_variation_fields(claimed), "host": host, "effects": json.loads(row["effects"]),
                "media": json.loads(row["media"])}

    def start_job(self, job_id: str, now: float) -> bool:
        """queued → processing, before its first variation is claimed (its
        disk check passed). False when it has started, ended or been
        cancelled meanwhile."""
        with self.writing() as conn:
            job = self._lock_job(conn, job_id)
            if job is None:
                return False
            try:
                rules.start(_job_state(job))
            except rules.IllegalTransition:
                return False
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(status="processing", started_at=now))
            return True

    def claim_variation(self, variation_id: str, host: str, now: float) -> dict | None:
        """This variation, queued → processing for this host, starting its job
        if it was queued. None when it was taken, cancelled or deleted
        meanwhile, or (PostgreSQL) is being claimed by another host now.
        Locks the job before the variation, as a cancel does."""
        with self.writing() as conn:
            job_id = conn.execute(select(variations.c.job_id).where(variations.c.id == variation_id)).scalar()
            job = self._lock_job(conn, job_id) if job_id is not None else None
            query = select(variations).where(variations.c.id == variation_id)
            if self.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            row = _mapping(conn.execute(query).first())
            if row is None or job is None:
                return None
            try:
                claimed = rules.claim(_variation_state(row), _job_state(job))
                if job["status"] == "queued":
                    rules.start(_job_state(job))
                    conn.execute(update(jobs).where(jobs.c.id == job["id"]).values(status="processing",
                                                                                    started_at=now))
            except rules.IllegalTransition:
                return None
            conn.execute(update(variations).where(variations.c.id == variation_id).values(
                **_variation_fields(claimed), host=host, dispatched_at=now, worker_pid=None, ffmpeg_pid=None))
            source = conn.execute(select(source_files).where(source_files.c.id == row["file_id"])).first()
        task = {**row, **_variation_fields(claimed), "host": host, "job_seq": job["seq"],
                "effects": json.loads(row["effects"]), "upload_path": source.upload_path,
                "duration": source.duration, "media": json.loads(source.media)}
        return task

    def record_start(self, variation_id: str, worker_pid: int, ffmpeg_pid: int | None, now: float) -> None:
        with self.writing() as conn:
            conn.execute(update(variations).where(variations.c.id == variation_id,
                                                  variations.c.status == "processing")
                         .values(worker_pid=worker_pid, ffmpeg_pid=ffmpeg_pid,
                                 started_at=func.coalesce(variations.c.started_at, now)))

    def record_progress(self, percents: Mapping[str, float]) -> None:
        """Progress of running variations; it only rises, and stays below 100."""
        if not percents:
            return
        with self.writing() as conn:
            for variation_id, percent in percents.items():
                value = max(0, min(99, int(percent)))
                conn.execute(update(variations).where(variations.c.id == variation_id,
                                                      variations.c.status == "processing",
                                                      variations.c.progress < value).values(progress=value))

    def record_outcome(self, variation_id: str, outcome: str, now: float, ttl: float, *,
                       error: str | None = None, size: int | None = None,
                       host: str | None = None) -> tuple[str | None, str | None]:
        """What became of one attempt: "completed", "failed", "interrupted" or
        "cancelled". Returns (job id, the job's new final status or None).
        With `host`, only that host's claim is settled: a host presumed dead
        that reports after all, once its variation went back to the queue (and
        perhaps to another host), changes nothing."""
        with self.writing() as conn:
            # the job's row, then the variation's: the order of every transition that takes both
            job_id = conn.execute(select(variations.c.job_id).where(variations.c.id == variation_id)).scalar()
            job = self._lock_job(conn, job_id) if job_id is not None else None
            row = _mapping(conn.execute(self._locked(
                select(variations).where(variations.c.id == variation_id))).first())
            if row is None or job is None:
                return None, None  # the job was deleted meanwhile
            if row["status"] == "processing" and host is not None and row["host"] != host:
                return job_id, None
            if row["status"] == "processing":
                state = _variation_state(row)
                if outcome == "completed":
                    after = rules.complete(state)
                elif outcome == "failed":
                    after = rules.fail(state, error or "the encode failed")
                elif outcome == "interrupted":
                    after = rules.interrupt(state)
                elif outcome == "cancelled":
                    after = rules.stopped_by_cancel(state)
                else:
                    raise ValueError(f"unknown outcome {outcome!r}")
                if after.status == "queued" and job["cancel_requested_at"] is not None:
                    after = rules.skip_for_cancel(after)  # no new attempt for a cancelled job
                fields = _variation_fields(after)
                fields["finished_at"] = now if after.status in rules.FINAL else None
                fields["ffmpeg_pid"] = None
                if after.status == "completed":
                    fields["size"] = size
                if after.status == "queued":
                    fields["host"] = None
                conn.execute(update(variations).where(variations.c.id == variation_id).values(**fields))
                # the job's counts changed: a new revision of it (its row is locked already)
                conn.execute(update(jobs).where(jobs.c.id == job_id).values(revision=jobs.c.revision + 1))
            return job_id, self._settle(conn, job_id, now, ttl)

    def running_variations(self, host: str | None = None) -> list[dict]:
        """Variations marked running (claimed by `host`, or by anyone)."""
        where = [variations.c.status == "processing"]
        if host is not None:
            where.append(variations.c.host == host)
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(select(variations).where(*where))]

    # --- hosts: who encodes, and who fell silent ---------------------------------------------
    def register_host(self, host: str, instance: str, machine: str, pid: int, now: float,
                      timeout: float) -> dict | None:
        """Take the host id `host` for this supervisor run (`instance`) unless
        another run holds it with a heartbeat younger than `timeout`. None
        when taken; else the holder's row, untouched."""
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        values = {"instance": instance, "machine": machine, "pid": pid, "started_at": now, "heartbeat_at": now}
        statement = dialect_insert(hosts).values(id=host, **values).on_conflict_do_update(
            index_elements=[hosts.c.id], set_=values,
            where=sa.or_(hosts.c.heartbeat_at <= now - timeout, hosts.c.instance == instance))
        with self.writing() as conn:
            # RETURNING, not rowcount: psycopg reports -1 for an upsert
            if conn.execute(statement.returning(hosts.c.id)).first() is not None:
                return None
            return _mapping(conn.execute(select(hosts).where(hosts.c.id == host)).first())

    def take_over_host(self, host: str, holder: Mapping, instance: str, machine: str, pid: int,
                       now: float) -> bool:
        """Take the host id from a holder known to be dead, if the row is still
        exactly as it was seen (nobody else took it or beat since)."""
        with self.writing() as conn:
            return conn.execute(update(hosts).where(
                hosts.c.id == host, hosts.c.instance.is_not_distinct_from(holder["instance"]),
                hosts.c.heartbeat_at == holder["heartbeat_at"]).values(
                instance=instance, machine=machine, pid=pid, started_at=now, heartbeat_at=now)).rowcount == 1

    def heartbeat(self, host: str, instance: str, pid: int, now: float) -> bool:
        """This supervisor run is alive. False when another run has taken its
        host id meanwhile (it was presumed dead): that row is left alone."""
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = dialect_insert(hosts).values(id=host, instance=instance, pid=pid, started_at=now,
                                                 heartbeat_at=now)
        with self.writing() as conn:
            return conn.execute(statement.on_conflict_do_update(
                index_elements=[hosts.c.id], set_={"pid": pid, "heartbeat_at": now},
                where=hosts.c.instance.is_not_distinct_from(instance)).returning(hosts.c.id)).first() is not None

    def forget_host(self, host: str, instance: str | None = None, silent_since: float | None = None) -> None:
        """A supervisor that stops cleanly has handed its work back (only its
        own run's row: `instance`); a silent host has been taken over (only
        if it is still silent: `silent_since`)."""
        where = [hosts.c.id == host]
        if instance is not None:
            where.append(hosts.c.instance == instance)
        if silent_since is not None:
            where.append(hosts.c.heartbeat_at <= silent_since)
        with self.writing() as conn:
            conn.execute(delete(hosts).where(*where))

    def live_hosts(self, now: float, timeout: float) -> list[dict]:
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(hosts).where(hosts.c.heartbeat_at > now - timeout).order_by(hosts.c.id))]

    def silent_hosts(self, now: float, timeout: float) -> list[str]:
        """Hosts presumed dead: no heartbeat for `timeout` seconds."""
        with self.reading() as conn:
            return list(conn.execute(select(hosts.c.id).where(hosts.c.heartbeat_at <= now - timeout)).scalars())

    # --- secrets every host shares ---------------------------------------------------------------
    def secret(self, name: str, make, now: float) -> tuple[str, bool]:
        """The secret called `name`, made with `make()` by whichever process
        asks first; (value, whether this call made it)."""
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        with self.writing() as conn:
            made = conn.execute(dialect_insert(secrets).values(name=name, value=make(), created_at=now)
                                .on_conflict_do_nothing(index_elements=[secrets.c.name])
                                .returning(secrets.c.name)).first() is not None
            value = conn.execute(select(secrets.c.value).where(secrets.c.name == name)).scalar()
        return value, made

    # --- once per cluster ---------------------------------------------------------------------------
    @contextmanager
    def cluster_lock(self, name: str) -> Iterator[bool]:
        """Yields True to the one process of the whole cluster that holds the
        lock for this block, False to the others (PostgreSQL advisory lock).
        SQLite serves one host, whose supervisor is alone by its DATA_DIR lock."""
        if self.dialect != "postgresql":
            yield True
            return
        key = _CLUSTER_LOCKS[name]
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            held = conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
            try:
                yield bool(held)
            finally:
                if held:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})

    def cancel_requested_jobs(self) -> list[dict]:
        """Jobs whose cancel was accepted but that have not settled yet."""
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(jobs.c.id, jobs.c.seq).where(jobs.c.status.in_(rules.UNFINISHED),
                                                    jobs.c.cancel_requested_at.is_not(None)))]

    def roll_up_progress(self) -> None:
        """Each running job's overall progress from its variations', weighted by
        their source's duration; never backwards."""
        query = (select(jobs.c.id, jobs.c.progress.label("job_progress"), variations.c.status,
                        variations.c.progress, variations.c.attempts, variations.c.failures,
                        variations.c.interruptions, variations.c.error, source_files.c.duration)
                 .join(variations, variations.c.job_id == jobs.c.id)
                 .join(source_files, source_files.c.id == variations.c.file_id)
                 .where(jobs.c.status == "processing"))
        with self.reading() as conn:
            rows = conn.execute(query).all()
        by_job: dict[str, tuple[int, list]] = {}
        for r in rows:
            previous, weighted = by_job.setdefault(r.id, (r.job_progress, []))
            weighted.append((r.duration or 1.0, _variation_state(r._mapping)))
        changed = {job_id: rules.running_progress(previous, weighted)
                   for job_id, (previous, weighted) in by_job.items()}
        changed = {k: v for k, v in changed.items() if v != by_job[k][0]}
        if changed:
            with self.writing() as conn:
                for job_id, percent in changed.items():
                    conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == "processing",
                                                    jobs.c.progress < percent).values(progress=percent))

    # --- lifecycle ----------------------------------------------------------------------------
    def expired_jobs(self, now: float) -> list[dict]:
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(jobs).where(jobs.c.status.in_(rules.FINAL), jobs.c.expires_at <= now)
                .order_by(jobs.c.expires_at))]

    def stale_queued_jobs(self, now: float) -> list[dict]:
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(jobs).where(jobs.c.status == "queued", jobs.c.expires_at <= now))]

    def finished_jobs_oldest_first(self) -> list[dict]:
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(jobs).where(jobs.c.status.in_(rules.FINAL)).order_by(jobs.c.finished_at, jobs.c.seq))]

    def all_job_ids(self) -> set[str]:
        with self.reading() as conn:
            return set(conn.execute(select(jobs.c.id)).scalars())

    def known_paths(self, job_id: str) -> set[str]:
        """Every file path (relative to DATA_DIR) that a row of this job owns."""
        with self.reading() as conn:
            paths = set(conn.execute(select(jobs.c.thumbnail_path).where(jobs.c.id == job_id)).scalars())
            paths |= set(conn.execute(select(source_files.c.upload_path)
                                      .where(source_files.c.job_id == job_id)).scalars())
            paths |= set(conn.execute(select(variations.c.output_path).where(
                variations.c.job_id == job_id, variations.c.status == "completed")).scalars())
        paths.discard(None)
        return paths

    # --- rate limits (login throttling, shared by every worker) ---------------------------------
    def rate_limit_incr(self, key: str, expiry: float, amount: int, now: float) -> int:
        """Add to a fixed-window counter, starting a new window when the old one expired."""
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        with self.writing() as conn:
            conn.execute(delete(rate_limits).where(rate_limits.c.key == key, rate_limits.c.expires_at <= now))
            statement = dialect_insert(rate_limits).values(key=key, count=amount, expires_at=now + expiry)
            conn.execute(statement.on_conflict_do_update(
                index_elements=[rate_limits.c.key],
                set_={"count": rate_limits.c.count + statement.excluded.count}))
            return conn.execute(select(rate_limits.c.count).where(rate_limits.c.key == key)).scalar()

    def rate_limit_get(self, key: str, now: float) -> tuple[int, float]:
        """(count, window end) of a live counter; (0, now) when there is none."""
        with self.reading() as conn:
            row = conn.execute(select(rate_limits.c.count, rate_limits.c.expires_at)
                               .where(rate_limits.c.key == key, rate_limits.c.expires_at > now)).first()
        return (row.count, row.expires_at) if row else (0, now)

    def rate_limit_clear(self, key: str | None = None) -> int:
        with self.writing() as conn:
            statement = delete(rate_limits)
            if key is not None:
                statement = statement.where(rate_limits.c.key == key)
            return conn.execute(statement).rowcount

    # --- API tokens -------------------------------------------------------------------------------
    def create_api_token(self, token_id: str, name: str, token_hash: str, now: float) -> None:
        with self.writing() as conn:
            conn.execute(insert(api_tokens).values(id=token_id, name=name, token_hash=token_hash, created_at=now))

    def find_api_token(self, token_hash: str) -> dict | None:
        with self.reading() as conn:
            return _mapping(conn.execute(select(api_tokens).where(api_tokens.c.token_hash == token_hash)).first())

    def list_api_tokens(self) -> list[dict]:
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.created_at, api_tokens.c.last_used_at)
                .order_by(api_tokens.c.created_at, api_tokens.c.id))]

    def touch_api_token(self, token_id: str, now: float, granularity: float = 60) -> None:
        """Record use, but write at most once a `granularity` per token."""
        with self.writing() as conn:
            conn.execute(update(api_tokens).where(
                api_tokens.c.id == token_id,
                sa.or_(api_tokens.c.last_used_at.is_(None), api_tokens.c.last_used_at < now - granularity))
                .values(last_used_at=now))

    def delete_api_token(self, token_id: str) -> bool:
        with self.writing() as conn:
            return conn.execute(delete(api_tokens).where(api_tokens.c.id == token_id)).rowcount == 1

    # --- sessions ended before they expire (sign-out) --------------------------------------------
    def end_session(self, session_id: str, expires_at: float, now: float) -> None:
        """The session stops working everywhere at once; its row goes once the
        session would have expired anyway (rows of expired sessions go here
        too, so the table stays as small as the sessions still alive)."""
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        with self.writing() as conn:
            conn.execute(delete(ended_sessions).where(ended_sessions.c.expires_at <= now))
            conn.execute(dialect_insert(ended_sessions)
                         .values(id=session_id, ended_at=now, expires_at=expires_at)
                         .on_conflict_do_nothing(index_elements=[ended_sessions.c.id]))

    def end_every_session(self, now: float) -> None:
        """Every session begun until now stops working; later ones are unaffected.
        One row, kept for good (a later, shorter TOKEN_TTL_SECONDS must not
        bring back a session it ended)."""
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = dialect_insert(ended_sessions).values(id=EVERY_SESSION, ended_at=now, expires_at=None)
        later = statement.excluded.ended_at > ended_sessions.c.ended_at  # two at once: the later one holds
        with self.writing() as conn:
            conn.execute(statement.on_conflict_do_update(
                index_elements=[ended_sessions.c.id],
                set_={"ended_at": sa.case((later, statement.excluded.ended_at), else_=ended_sessions.c.ended_at)}))

    def session_ended(self, session_id: str, begun_at: float) -> bool:
        """Whether this session was ended, on its own or with every other."""
        with self.reading() as conn:
            rows = conn.execute(_ENDED_SESSIONS, {"session_id": session_id}).all()
        return any(r.id == session_id or r.ended_at >= begun_at for r in rows)


class CancelListener:
    """A connection of its own that LISTENs for accepted cancels (PostgreSQL
    only): `request_cancel` announces each one on CANCEL_CHANNEL in its own
    transaction, so it arrives once it is committed, and not before."""

    def __init__(self, store: Store):
        self.store = store
        self.conn = None

    def connect(self) -> None:
        import psycopg

        self.close()
        args, params = self.store.engine.dialect.create_connect_args(self.store.engine.url)
        params.pop("context", None)
        # keepalives: a connection silently lost over TCP is noticed in seconds
        self.conn = psycopg.connect(*args, **params, autocommit=True, connect_timeout=10,
                                    application_name=LISTENER_NAME,
                                    keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
        self.conn.execute(f"LISTEN {CANCEL_CHANNEL}")

    def wait(self, timeout: float) -> list[tuple[int, str]]:
        """(seq, job id) of the cancels announced within `timeout` seconds;
        returns at the first ones. Raises psycopg.Error when the connection
        is lost."""
        cancels = []
        for note in self.conn.notifies(timeout=timeout, stop_after=1):
            seq, _, job_id = note.payload.partition(" ")
            if note.channel == CANCEL_CHANNEL and seq.isdigit():
                cancels.append((int(seq), job_id))
        return cancels

    def ping(self) -> None:
        self.conn.execute("SELECT 1")

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None
