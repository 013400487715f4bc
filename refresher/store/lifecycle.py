"""What the cleanup daemon (`refresher.lifecycle`) asks: the jobs that may go
(expiry, eviction: `rules.may_expire`), the jobs left queued past their
expiry, and which stored files rows own (the sweep)."""

from __future__ import annotations

from sqlalchemy import select

from .. import rules
from .database import Database
from .rows import job_state
from .schema import jobs, source_files, variations


class Lifecycle(Database):
    def expired_jobs(self, now: float) -> list[dict]:
        """Jobs past their expiry that may go, the longest expired first."""
        with self.reading() as conn:
            rows = [
                dict(r._mapping)
                for r in conn.execute(
                    select(jobs).where(jobs.c.expires_at <= now).order_by(jobs.c.expires_at, jobs.c.seq)
                )
            ]
        return [job for job in rows if rules.may_expire(job_state(job))]

    def stale_queued_jobs(self, now: float) -> list[dict]:
        with self.reading() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(select(jobs).where(jobs.c.status == "queued", jobs.c.expires_at <= now))
            ]

    def finished_jobs_oldest_first(self) -> list[dict]:
        """The jobs eviction may delete, the longest finished first."""
        with self.reading() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(jobs).order_by(jobs.c.finished_at, jobs.c.seq))]
        return [job for job in rows if rules.may_expire(job_state(job))]

    def all_job_ids(self) -> set[str]:
        with self.reading() as conn:
            return set(conn.execute(select(jobs.c.id)).scalars())

    def known_paths(self, job_id: str) -> set[str]:
        """Every file path (relative to DATA_DIR) that a row of this job owns."""
        with self.reading() as conn:
            paths = set(conn.execute(select(jobs.c.thumbnail_path).where(jobs.c.id == job_id)).scalars())
            paths |= set(
                conn.execute(select(source_files.c.upload_path).where(source_files.c.job_id == job_id)).scalars()
            )
            paths |= set(
                conn.execute(
                    select(variations.c.output_path).where(
                        variations.c.job_id == job_id, variations.c.status == "completed"
                    )
                ).scalars()
            )
        paths.discard(None)
        return paths
