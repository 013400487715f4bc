"""Jobs as people see and change them: read (a whole job in one statement for
a status poll), create under the queue's cap, delete, cancel, retry and
resume. Also the two steps every transition of a job takes, whoever asks for
it: lock the job's row, and settle the job once none of its variations is
queued or running (`lock_job`, `settle`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Row

from .. import rules
from .database import JOB_CREATION_LOCK, Database, for_update, through_a_full_disk
from .listener import CANCEL_CHANNEL
from .rows import job_state, mapping, variation_fields, variation_state
from .schema import jobs, source_files, variations
from .webhooks import announce_end

# A job with its files and their variations, one row per variation (files
# without any still come once): built once, so a status poll spends no time
# building it again.
_WHOLE_JOB = (
    select(*jobs.c, *source_files.c, *variations.c)
    .select_from(
        jobs.outerjoin(source_files, source_files.c.job_id == jobs.c.id).outerjoin(
            variations, variations.c.file_id == source_files.c.id
        )
    )
    .where(jobs.c.id == sa.bindparam("job_id"))
    .order_by(source_files.c.position, variations.c.variation_index)
)
# Its rows' keys, as `mapping` makes them (plain `str`, not SQLAlchemy's own).
_JOB_KEYS, _FILE_KEYS, _VARIATION_KEYS = (
    tuple(str(c.name) for c in table.c) for table in (jobs, source_files, variations)
)


class QueueFull(Exception):
    """`cap` (MAX_QUEUED_JOBS) jobs are unfinished already: no new one now."""

    def __init__(self, unfinished: int, cap: int):
        super().__init__(f"{unfinished} unfinished jobs, at most {cap}")
        self.unfinished = unfinished
        self.cap = cap


def read_job(conn: Connection, job_id: str) -> dict | None:
    return mapping(conn.execute(select(jobs).where(jobs.c.id == job_id)).first())


def lock_job(conn: Connection, job_id: str) -> dict | None:
    """The job's row, locked for this transaction: the first step of every
    transition that takes a job's row and its variations', in that order."""
    return mapping(conn.execute(for_update(conn, select(jobs).where(jobs.c.id == job_id))).first())


def settle(conn: Connection, job_id: str, now: float, ttl: float) -> str | None:
    """Give the job its final status if `rules.settle` says it has one; that
    status, or None."""
    job = lock_job(conn, job_id)
    if job is None:
        return None
    rows = conn.execute(select(variations).where(variations.c.job_id == job_id)).all()
    settlement = rules.settle(job_state(job), [variation_state(r._mapping) for r in rows])
    if settlement is None:
        return None
    fields = {"status": settlement.status, "progress": settlement.progress, "finished_at": now, "expires_at": now + ttl}
    if settlement.status == "cancelled":
        fields["cancelled_at"] = job["cancel_requested_at"] or now
    if settlement.status == "failed":
        fields["error"] = settlement.error
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(**fields))
    announce_end(conn, job, settlement.status, now)
    return settlement.status


def _with_effects(row: Row[Any]) -> dict:
    v = mapping(row)
    v["effects"] = json.loads(v["effects"])
    return v


class Jobs(Database):
    # --- reading ------------------------------------------------------------------------
    def get_job(self, job_id: str, conn: Connection | None = None) -> dict | None:
        if conn is not None:
            return read_job(conn, job_id)
        with self.reading() as conn:
            return read_job(conn, job_id)

    def get_job_files(self, job_id: str, conn: Connection | None = None) -> list[dict]:
        if conn is None:
            with self.reading() as conn:
                return self.get_job_files(job_id, conn)
        rows = conn.execute(
            select(source_files).where(source_files.c.job_id == job_id).order_by(source_files.c.position)
        ).all()
        files = [dict(r._mapping) for r in rows]
        for f in files:
            f["media"] = json.loads(f["media"])
        return files

    def get_job_variations(self, job_id: str, conn: Connection | None = None) -> list[dict]:
        if conn is None:
            with self.reading() as conn:
                return self.get_job_variations(job_id, conn)
        rows = conn.execute(
            select(variations)
            .join(source_files, source_files.c.id == variations.c.file_id)
            .where(variations.c.job_id == job_id)
            .order_by(source_files.c.position, variations.c.variation_index)
        ).all()
        return [_with_effects(r) for r in rows]

    def get_job_whole(self, job_id: str) -> tuple[dict, list[dict], list[dict]] | None:
        """(job, files, variations), or None when there is no such job: what
        GET /api/jobs/<id> shows, in one statement (the job left-joined with
        its files and theirs with their variations), so a status poll costs
        one round trip besides its session check."""
        with self.reading() as conn:
            return _whole_job(conn, job_id)

    def get_variation(self, variation_id: str) -> dict | None:
        with self.reading() as conn:
            row = conn.execute(select(variations).where(variations.c.id == variation_id)).first()
        return _with_effects(row) if row is not None else None

    def list_jobs(self, limit: int = 50, status: str | None = None) -> list[dict]:
        """Newest first, with the counts and file names the job list shows."""

        def variations_where(*conditions):
            return (
                select(func.count())
                .select_from(variations)
                .where(variations.c.job_id == jobs.c.id, *conditions)
                .scalar_subquery()
            )

        query = (
            select(
                jobs,
                select(func.count())
                .select_from(source_files)
                .where(source_files.c.job_id == jobs.c.id)
                .scalar_subquery()
                .label("total_videos"),
                variations_where().label("total_variations"),
                variations_where(variations.c.status == "completed").label("completed_variations"),
            )
            .order_by(jobs.c.created_at.desc(), jobs.c.seq.desc())
            .limit(limit)
        )
        if status:
            query = query.where(jobs.c.status == status)
        with self.reading() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
            names: dict[str, list[str]] = {r["id"]: [] for r in rows}
            if names:
                for job_id, name in conn.execute(
                    select(source_files.c.job_id, source_files.c.name)
                    .where(source_files.c.job_id.in_(list(names)))
                    .order_by(source_files.c.job_id, source_files.c.position)
                ):
                    names[job_id].append(name)
        for r in rows:
            r["file_names"] = names[r["id"]]
        return rows

    def queue_counts(self) -> dict:
        with self.reading() as conn:
            counts: dict[str, int] = dict(
                conn.execute(
                    select(jobs.c.status, func.count())
                    .where(jobs.c.status.in_(rules.UNFINISHED))
                    .group_by(jobs.c.status)
                ).all()
            )
        return {"queued": counts.get("queued", 0), "processing": counts.get("processing", 0)}

    # --- creating and deleting ------------------------------------------------------------
    def check_queue_room(self, cap: int, conn: Connection | None = None) -> None:
        """Raises QueueFull unless a new job may join the queue now
        (`rules.may_queue`: fewer than `cap` jobs unfinished)."""
        if conn is None:
            with self.reading() as conn:
                return self.check_queue_room(cap, conn)
        unfinished = conn.execute(
            select(func.count()).select_from(jobs).where(jobs.c.status.in_(rules.UNFINISHED))
        ).scalar_one()
        if not rules.may_queue(unfinished, cap):
            raise QueueFull(unfinished, cap)

    def create_job(
        self, job: dict, files: Iterable[dict], new_variations: Iterable[dict], max_unfinished: int | None = None
    ) -> None:
        """Insert a queued job with its source files and variations, all or
        nothing; QueueFull when `max_unfinished` jobs are already waiting or
        running (checked under the same lock as the insert, so a burst of
        uploads can never pass the cap together)."""
        with self.writing() as conn:
            if max_unfinished is not None:
                self._lock_job_creation(conn, max_unfinished)
                self.check_queue_room(max_unfinished, conn)
            conn.execute(insert(jobs), [{**job, "status": "queued"}])
            conn.execute(
                insert(source_files),
                [{**f, "job_id": job["id"], "media": json.dumps(f.get("media", {}))} for f in files],
            )
            conn.execute(
                insert(variations),
                [
                    {"est_cost": 0, **v, "job_id": job["id"], "status": "queued", "effects": json.dumps(v["effects"])}
                    for v in new_variations
                ],
            )

    def _lock_job_creation(self, conn: Connection, max_unfinished: int | None) -> None:
        """Where a job joins the queue under the cap, one transaction at a time
        (SQLite's BEGIN IMMEDIATE holds the whole database already)."""
        if max_unfinished is not None and self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": JOB_CREATION_LOCK})

    @through_a_full_disk
    def delete_job(self, job_id: str) -> bool:
        with self.writing() as conn:
            return conn.execute(delete(jobs).where(jobs.c.id == job_id)).rowcount == 1

    # --- cancel, retry, resume ---------------------------------------------------------------
    @through_a_full_disk
    def request_cancel(self, job_id: str, now: float, ttl: float) -> dict | None:
        """Accept a cancel: no variation of the job starts any more, the queued
        ones are skipped, and the job settles at once if nothing of it runs.
        Returns the job as it now stands (None: no such job); raises
        rules.IllegalTransition when it has finished already."""
        with self.writing() as conn:
            job = lock_job(conn, job_id)
            if job is None:
                return None
            rules.request_cancel(job_state(job))
            if job["cancel_requested_at"] is None:
                conn.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested_at=now))
            queued = conn.execute(
                select(variations).where(variations.c.job_id == job_id, variations.c.status == "queued")
            ).all()
            for row in queued:
                state = rules.skip_for_cancel(variation_state(row._mapping))
                # still queued: a host may have claimed it since the SELECT (its flag stops it)
                conn.execute(
                    update(variations)
                    .where(variations.c.id == row.id, variations.c.status == "queued")
                    .values(**variation_fields(state), finished_at=now)
                )
            settle(conn, job_id, now, ttl)
            job = read_job(conn, job_id)
            assert job is not None  # its row is locked by this transaction
            if self.dialect == "postgresql" and job["status"] not in rules.FINAL:
                # Delivered to every listening supervisor when, and only if, this commits.
                conn.execute(
                    sa.text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": CANCEL_CHANNEL, "payload": f"{job['seq']} {job_id}"},
                )
            return job

    def reopen_job(
        self, job_id: str, kind: str, now: float, ttl: float, max_unfinished: int | None = None
    ) -> tuple[dict, list[dict], list[dict]] | None:
        """Give a finished job work again: "retry" queues its failed variations
        (with their recorded effects), "resume" those a cancel left unmade.
        Finished variations stay. Returns the job as it now stands, read in
        the same transaction (job, files, variations as `get_job_whole`
        gives them; None: no such job), so that the answer says what the
        reopen made of it, whatever a supervisor claims a moment later;
        raises rules.IllegalTransition, with the reason as its message, when
        the job is in the wrong state for it, and QueueFull when
        `max_unfinished` jobs are already waiting or running (the cap an
        upload meets, checked under the same lock as `create_job`'s)."""
        step, from_status = {"retry": (rules.retry, "failed"), "resume": (rules.resume, "cancelled")}[kind]
        with self.writing() as conn:
            self._lock_job_creation(conn, max_unfinished)
            job = lock_job(conn, job_id)
            if job is None:
                return None
            rows = [r._mapping for r in conn.execute(select(variations).where(variations.c.job_id == job_id))]
            states = [variation_state(r) for r in rows]
            state = job_state(job)
            reason = rules.can_retry(state, states) if kind == "retry" else rules.can_resume(state)
            if reason is not None:
                raise rules.IllegalTransition(reason)
            if max_unfinished is not None:
                self.check_queue_room(max_unfinished, conn)
            reopened = rules.reopen(state)
            after = []
            for row, before in zip(rows, states, strict=True):
                if row["status"] == from_status:
                    before = step(before)
                    conn.execute(
                        update(variations)
                        .where(variations.c.id == row["id"])
                        .values(
                            **variation_fields(before),
                            finished_at=None,
                            host=None,
                            worker_pid=None,
                            ffmpeg_pid=None,
                            dispatched_at=None,
                        )
                    )
                after.append(before)
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    status=reopened.status,
                    error=reopened.error,
                    cancel_requested_at=None,
                    cancelled_at=None,
                    finished_at=None,
                    progress=rules.made_share(rules.count(after)),
                    expires_at=now + ttl,
                )
            )
            return _whole_job(conn, job_id)


def _whole_job(conn, job_id: str) -> tuple[dict, list[dict], list[dict]] | None:
    rows = conn.execute(_WHOLE_JOB, {"job_id": job_id}).all()
    if not rows:
        return None
    job = dict(zip(_JOB_KEYS, rows[0], strict=False))  # the row goes on with its file and variation
    files: dict[str, dict] = {}
    found = []
    file_at, variation_at = len(_JOB_KEYS), len(_JOB_KEYS) + len(_FILE_KEYS)
    for r in rows:
        file_id = r[file_at]
        if file_id is not None and file_id not in files:
            files[file_id] = dict(zip(_FILE_KEYS, r[file_at:variation_at], strict=True))
            files[file_id]["media"] = json.loads(files[file_id]["media"])
        if r[variation_at] is not None:
            v = dict(zip(_VARIATION_KEYS, r[variation_at:], strict=True))
            v["effects"] = json.loads(v["effects"])
            found.append(v)
    return job, list(files.values()), found
