"""Webhook deliveries: each announcement of a job's end is a row, written in
the transaction that ends the job (`announce_end`), so it is neither lost
by a crash after the end nor made without one. Any supervisor may deliver
it: an attempt begins by claiming the row — one conditional UPDATE that
moves `next_attempt_at` past the attempt's longest duration — so of several
hosts exactly one makes each attempt, and a host that dies in the middle
of one leaves a row that becomes due again when its claim runs out. What
each attempt met is written to the row and mirrored on the job, which
shows it (`webhook` in the job's JSON)."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from .database import Database, new_id
from .rows import mapping
from .schema import jobs, webhook_deliveries

EVENTS = {"completed": "job.completed", "failed": "job.failed", "cancelled": "job.cancelled"}


def announce_end(conn: Connection, job: dict, status: str, now: float) -> None:
    """The job (its row as read in this transaction) has just ended with
    `status`: if it has a webhook, queue the announcement, due now."""
    if not job.get("webhook_url"):
        return
    conn.execute(
        webhook_deliveries.insert().values(
            id=f"msg_{new_id()}", job_id=job["id"], event=EVENTS[status], occurred_at=now, next_attempt_at=now
        )
    )
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job["id"])
        .values(webhook_attempts=0, webhook_delivered_at=None, webhook_error=None)
    )


def gave_up(attempts: int) -> str:
    return f"gave up after {attempts} attempt{'' if attempts == 1 else 's'}"


def _mirror(conn: Connection, row: dict, **values) -> None:
    """Show the delivery's state on its job, if it is the job's latest."""
    latest = conn.execute(
        select(webhook_deliveries.c.id)
        .where(webhook_deliveries.c.job_id == row["job_id"])
        .order_by(webhook_deliveries.c.occurred_at.desc())
        .limit(1)
    ).scalar()
    if latest == row["id"]:
        conn.execute(update(jobs).where(jobs.c.id == row["job_id"]).values(**values))


class Webhooks(Database):
    def next_webhook_due(self) -> float | None:
        """When the soonest delivery (or claim's end) is due; None: nothing pending."""
        with self.reading() as conn:
            return conn.execute(select(func.min(webhook_deliveries.c.next_attempt_at))).scalar()

    def claim_webhooks(self, now: float, claim_seconds: float, max_attempts: int, limit: int = 8) -> list[dict]:
        """Claim deliveries that are due, for one attempt each: each comes with
        its job's `webhook_url` and its `attempts` counting this one. A
        delivery whose last allowed attempt was claimed and never reported
        (its host died) is given up instead."""
        with self.reading() as conn:
            due = list(
                conn.execute(
                    select(webhook_deliveries.c.id)
                    .where(webhook_deliveries.c.next_attempt_at <= now)
                    .order_by(webhook_deliveries.c.next_attempt_at)
                    .limit(limit)
                ).scalars()
            )
        claimed = []
        for delivery_id in due:
            with self.writing() as conn:
                row = mapping(
                    conn.execute(
                        update(webhook_deliveries)
                        .where(webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.next_attempt_at <= now)
                        .values(attempts=webhook_deliveries.c.attempts + 1, next_attempt_at=now + claim_seconds)
                        .returning(*webhook_deliveries.c)
                    ).first()
                )
                if row is None:
                    continue  # another host claimed it first, or it is gone
                if row["attempts"] > max_attempts:
                    row["attempts"] = max_attempts
                    conn.execute(
                        update(webhook_deliveries)
                        .where(webhook_deliveries.c.id == delivery_id)
                        .values(attempts=max_attempts)
                    )
                    error = row["last_error"] or "an attempt was interrupted"
                    self._record(conn, row, None, f"{error}; {gave_up(max_attempts)}", None)
                    continue
                row["webhook_url"] = conn.execute(select(jobs.c.webhook_url).where(jobs.c.id == row["job_id"])).scalar()
                _mirror(conn, row, webhook_attempts=row["attempts"], webhook_error=row["last_error"])
                claimed.append(row)
        return claimed

    def keep_webhook_body(self, delivery_id: str, body: str) -> str | None:
        """The body every attempt of this delivery sends: the one kept by its
        first attempt, else `body`, kept now. None when the delivery is gone."""
        with self.writing() as conn:
            conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.body.is_(None))
                .values(body=body)
            )
            return conn.execute(
                select(webhook_deliveries.c.body).where(webhook_deliveries.c.id == delivery_id)
            ).scalar()

    def record_webhook_attempt(
        self, delivery_id: str, attempt: int, now: float, error: str | None, retry_at: float | None
    ) -> bool:
        """What attempt number `attempt` met: delivered (`error` None), or
        failed and due again at `retry_at` (None: given up). False when the
        row has moved on meanwhile (another host claimed it after this
        host's claim ran out) or is gone; a delivery is recorded anyway."""
        with self.writing() as conn:
            row = mapping(
                conn.execute(select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)).first()
            )
            if row is None or (row["attempts"] != attempt and error is not None) or row["delivered_at"] is not None:
                return False
            # a delivery keeps the error of the attempt before it, if any, to show
            self._record(conn, row, now if error is None else None, error or row["last_error"], retry_at)
            return True

    @staticmethod
    def _record(conn: Connection, row: dict, delivered_at: float | None, error: str | None, retry_at: float | None):
        conn.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == row["id"])
            .values(
                next_attempt_at=None if delivered_at is not None else retry_at,
                delivered_at=delivered_at,
                last_error=error,
            )
        )
        _mirror(conn, row, webhook_attempts=row["attempts"], webhook_delivered_at=delivered_at, webhook_error=error)

    def webhook_deliveries(self, job_id: str) -> list[dict]:
        """A job's deliveries, the oldest first (for tests and support)."""
        with self.reading() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    select(webhook_deliveries)
                    .where(webhook_deliveries.c.job_id == job_id)
                    .order_by(webhook_deliveries.c.occurred_at)
                )
            ]
