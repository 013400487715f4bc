"""The queue, from the supervisor's side: pick and claim the next variation,
start (or fail) a queued job, record what each attempt reports — its start,
its progress, its outcome — and roll the variations' progress up to their
jobs. Every change of state is the one `refresher.rules` gives."""

from __future__ import annotations

import json
from collections.abc import Mapping

from sqlalchemy import func, select, update

from .. import rules
from .database import Database, for_update
from .jobs import lock_job, read_job, settle
from .rows import job_fields, job_state, mapping, variation_fields, variation_state
from .schema import jobs, source_files, variations
from .webhooks import announce_end


class JobNotStarted(Exception):
    """The next variation to claim belongs to a job still queued."""

    def __init__(self, job: dict):
        super().__init__(f"job {job['id']} is queued")
        self.job = job


def _next_variation(*columns):
    """The variation that should run next, fairly between jobs: the job with
    the fewest variations running goes first, then the one that has had
    the fewest started, then the oldest — so jobs take turns, and a small
    job behind a big one gets the next free slot. Within a job, one
    variation of every source before the second of any (a cancel then
    leaves every source about as far), the costliest first among equals."""
    others = variations.alias("others")

    def of_this_job(*conditions):
        return (
            select(func.count())
            .select_from(others)
            .where(others.c.job_id == variations.c.job_id, *conditions)
            .scalar_subquery()
        )

    running = of_this_job(others.c.status == "processing")
    started = of_this_job(others.c.status != "queued")
    return (
        select(*columns)
        .join(jobs, jobs.c.id == variations.c.job_id)
        .join(source_files, source_files.c.id == variations.c.file_id)
        .where(
            variations.c.status == "queued", jobs.c.status.in_(rules.UNFINISHED), jobs.c.cancel_requested_at.is_(None)
        )
        .order_by(
            running,
            started,
            jobs.c.seq,
            variations.c.variation_index,
            variations.c.est_cost.desc(),
            source_files.c.position,
        )
        .limit(1)
    )


class Queue(Database):
    # --- claiming -----------------------------------------------------------------------
    def claim_next_variation(self, host: str, now: float) -> dict | None:
        """queued → processing for this host: the variation that should run
        next (`_next_variation`), picked and claimed in one transaction. On
        PostgreSQL the pick itself locks the row (`FOR UPDATE OF variations
        SKIP LOCKED`): a row another host is claiming at this moment is
        passed over for the next one, never picked again and again, and no
        host waits for another. The job's row is read, not locked, so a
        claim never waits behind a cancel (which locks the job, then its
        queued variations: a claim that wins that race is stopped by the
        cancel's flag like any running variation). Returns the task (the
        variation with its source's path and media), None when nothing can
        be claimed; raises JobNotStarted when the next variation's job is
        still queued: the caller checks its disk space and starts it
        (`start_job`) or fails it (`fail_queued_job`) first."""
        query = _next_variation(
            variations,
            jobs.c.status.label("job_status"),
            jobs.c.seq.label("job_seq"),
            source_files.c.upload_path,
            source_files.c.duration,
            source_files.c.media,
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(of=variations, skip_locked=True)
        with self.writing() as conn:
            row = mapping(conn.execute(query).first())
            if row is None:
                return None
            if row["job_status"] == "queued":
                job = read_job(conn, row["job_id"])
                assert job is not None  # the claim's query found it, and a delete would wait for the claimed row
                raise JobNotStarted(job)
            claimed = rules.claim(variation_state(row), rules.Job(status=row["job_status"]))
            conn.execute(
                update(variations)
                .where(variations.c.id == row["id"])
                .values(**variation_fields(claimed), host=host, dispatched_at=now, worker_pid=None, ffmpeg_pid=None)
            )
        return {
            **row,
            **variation_fields(claimed),
            "host": host,
            "effects": json.loads(row["effects"]),
            "media": json.loads(row["media"]),
        }

    def start_job(self, job_id: str, now: float) -> bool:
        """queued → processing (`rules.start`), before its first variation is
        claimed (its disk check passed). False when it has started, ended or
        been cancelled meanwhile."""
        with self.writing() as conn:
            job = lock_job(conn, job_id)
            if job is None:
                return False
            try:
                started = rules.start(job_state(job))
            except rules.IllegalTransition:
                return False
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**job_fields(started), started_at=now))
            return True

    def fail_queued_job(self, job_id: str, reason: str, now: float, ttl: float) -> bool:
        """A queued job that cannot run at all (`rules.fail_job`): it and its
        queued variations fail with `reason`. False when it is not queued
        (any more)."""
        with self.writing() as conn:
            job = lock_job(conn, job_id)
            if job is None:
                return False
            try:
                failed = rules.fail_job(job_state(job), reason)
            except rules.IllegalTransition:
                return False
            queued = conn.execute(
                select(variations).where(variations.c.job_id == job_id, variations.c.status == "queued")
            ).all()
            for row in queued:
                state = rules.fail_with_job(variation_state(row._mapping), reason)
                conn.execute(
                    update(variations)
                    .where(variations.c.id == row.id)
                    .values(**variation_fields(state), finished_at=now)
                )
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(**job_fields(failed), finished_at=now, expires_at=now + ttl)
            )
            announce_end(conn, job, failed.status, now)
            return True

    # --- what an attempt reports ------------------------------------------------------------
    def record_start(self, variation_id: str, worker_pid: int, ffmpeg_pid: int | None, now: float) -> None:
        with self.writing() as conn:
            conn.execute(
                update(variations)
                .where(variations.c.id == variation_id, variations.c.status == "processing")
                .values(
                    worker_pid=worker_pid, ffmpeg_pid=ffmpeg_pid, started_at=func.coalesce(variations.c.started_at, now)
                )
            )

    def record_progress(self, percents: Mapping[str, float]) -> None:
        """Progress of running variations, as `rules.progress` has it: it only
        rises, and stays below 100. A report for a variation that ended or
        went back to the queue since it was sent changes nothing."""
        if not percents:
            return
        with self.writing() as conn:
            # locked in the order of their ids: two reports that share rows never deadlock
            rows = conn.execute(
                for_update(
                    conn, select(variations).where(variations.c.id.in_(list(percents))).order_by(variations.c.id)
                )
            ).all()
            for row in rows:
                before = variation_state(row._mapping)
                try:
                    after = rules.progress(before, percents[row.id])
                except rules.IllegalTransition:
                    continue
                if after.progress != before.progress:
                    conn.execute(update(variations).where(variations.c.id == row.id).values(progress=after.progress))

    def record_outcome(
        self,
        variation_id: str,
        outcome: str,
        now: float,
        ttl: float,
        *,
        error: str | None = None,
        size: int | None = None,
        host: str | None = None,
    ) -> tuple[str | None, str | None]:
        """What became of one attempt: "completed", "failed", "interrupted" or
        "cancelled". Returns (job id, the job's new final status or None).
        With `host`, only that host's claim is settled: a host presumed dead
        that reports after all, once its variation went back to the queue (and
        perhaps to another host), changes nothing."""
        with self.writing() as conn:
            # the job's row, then the variation's: the order of every transition that takes both
            job_id = conn.execute(select(variations.c.job_id).where(variations.c.id == variation_id)).scalar()
            if job_id is None:
                return None, None  # the job was deleted meanwhile
            job = lock_job(conn, job_id)
            row = mapping(
                conn.execute(for_update(conn, select(variations).where(variations.c.id == variation_id))).first()
            )
            if row is None or job is None:
                return None, None  # the job was deleted meanwhile
            if row["status"] == "processing" and host is not None and row["host"] != host:
                return job_id, None
            if row["status"] == "processing":
                state = variation_state(row)
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
                fields = variation_fields(after)
                fields["finished_at"] = now if after.status in rules.FINAL else None
                fields["ffmpeg_pid"] = None
                if after.status == "completed":
                    fields["size"] = size
                if after.status == "queued":
                    fields["host"] = None
                conn.execute(update(variations).where(variations.c.id == variation_id).values(**fields))
                # the job's counts changed: a new revision of it (its row is locked already)
                conn.execute(update(jobs).where(jobs.c.id == job_id).values(revision=jobs.c.revision + 1))
            return job_id, settle(conn, job_id, now, ttl)

    def settle_job(self, job_id: str, now: float, ttl: float) -> str | None:
        """The job's final status if it has one now (see `settle`)."""
        with self.writing() as conn:
            return settle(conn, job_id, now, ttl)

    # --- what runs ---------------------------------------------------------------------------
    def running_variations(self, host: str | None = None) -> list[dict]:
        """Variations marked running (claimed by `host`, or by anyone)."""
        where = [variations.c.status == "processing"]
        if host is not None:
            where.append(variations.c.host == host)
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(select(variations).where(*where))]

    def cancel_requested_jobs(self) -> list[dict]:
        """Jobs whose cancel was accepted but that have not settled yet."""
        with self.reading() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    select(jobs.c.id, jobs.c.seq).where(
                        jobs.c.status.in_(rules.UNFINISHED), jobs.c.cancel_requested_at.is_not(None)
                    )
                )
            ]

    def roll_up_progress(self) -> None:
        """Each running job's overall progress from its variations', weighted by
        their source's duration; never backwards (`rules.running_progress`)."""
        query = (
            select(
                jobs.c.id,
                jobs.c.progress.label("job_progress"),
                variations.c.status,
                variations.c.progress,
                variations.c.attempts,
                variations.c.failures,
                variations.c.interruptions,
                variations.c.error,
                source_files.c.duration,
            )
            .join(variations, variations.c.job_id == jobs.c.id)
            .join(source_files, source_files.c.id == variations.c.file_id)
            .where(jobs.c.status == "processing")
        )
        with self.reading() as conn:
            rows = conn.execute(query).all()
        by_job: dict[str, tuple[int, list]] = {}
        for r in rows:
            previous, weighted = by_job.setdefault(r.id, (r.job_progress, []))
            weighted.append((r.duration or 1.0, variation_state(r._mapping)))
        changed = {
            job_id: rules.running_progress(previous, weighted) for job_id, (previous, weighted) in by_job.items()
        }
        changed = {k: v for k, v in changed.items() if v != by_job[k][0]}
        if changed:
            with self.writing() as conn:
                for job_id, percent in changed.items():
                    conn.execute(
                        update(jobs)
                        .where(jobs.c.id == job_id, jobs.c.status == "processing", jobs.c.progress < percent)
                        .values(progress=percent)
                    )
