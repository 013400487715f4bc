"""The rules of jobs and variations: which state follows which event.

Pure: no clock, no database, no processes. The store loads the current state,
asks here what follows, and writes exactly that; the web views (cancel,
retry, resume), the intake (the queue's cap), the supervisor (claims,
progress and outcomes), its encode workers (progress) and the cleanup daemon
(expiry, the stale queue) all come through these functions, so each rule is
written once and tested as a table.

A variation lives `queued → processing → completed | failed | cancelled`;
an attempt that fails or is interrupted may put it back in the queue. A job
lives `queued → processing → completed | failed | cancelled`, and its final
status follows from its variations once none is queued or running.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

JOB_STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
VARIATION_STATUSES = JOB_STATUSES
FINAL = frozenset({"completed", "failed", "cancelled"})
UNFINISHED = frozenset({"queued", "processing"})

MAX_FAILED_ATTEMPTS = 2  # an ffmpeg that fails on its own is tried once more
MAX_INTERRUPTIONS = 3  # shutdowns, crashes and lost hosts a variation may live through


class IllegalTransition(ValueError):
    """The event does not apply to the current state (a bug, or a lost race)."""


# --- variations ----------------------------------------------------------------


@dataclass(frozen=True)
class Variation:
    status: str
    attempts: int = 0  # every start, whatever its end
    failures: int = 0  # attempts that failed on their own (ffmpeg's error, a dead worker)
    interruptions: int = 0  # attempts ended from outside (shutdown, crash, lost host)
    # 0–100: the furthest any attempt got in this run of its job, so that what
    # a client sees never goes backwards while the job lives (a failed or
    # stopped attempt keeps it; only retry and resume, which start a new run,
    # set it back to 0).
    progress: int = 0
    error: str | None = None


def _require(v: Variation, event: str, *statuses: str) -> None:
    if v.status not in statuses:
        raise IllegalTransition(f"a {v.status} variation cannot {event}")


def claim(v: Variation, job: Job) -> Variation:
    """A host takes the variation to encode it."""
    _require(v, "be claimed", "queued")
    if job.status not in UNFINISHED or job.cancel_requested:
        raise IllegalTransition(f"no variation of a {job.describe()} job may start")
    return replace(v, status="processing", attempts=v.attempts + 1)


def complete(v: Variation) -> Variation:
    """ffmpeg finished on its own and the output is in place."""
    _require(v, "complete", "processing")
    return replace(v, status="completed", progress=100, error=None)


def fail(v: Variation, error: str) -> Variation:
    """The attempt failed on its own: once more, then for good."""
    _require(v, "fail", "processing")
    failures = v.failures + 1
    status = "queued" if failures < MAX_FAILED_ATTEMPTS else "failed"
    return replace(v, status=status, failures=failures, error=error)


def interrupt(v: Variation, why: str = "interrupted") -> Variation:
    """The attempt was ended from outside; the variation goes back to the
    queue, but not forever."""
    _require(v, "be interrupted", "processing")
    interruptions = v.interruptions + 1
    if interruptions >= MAX_INTERRUPTIONS:
        return replace(
            v,
            status="failed",
            interruptions=interruptions,
            error=f"the encode was {why} {interruptions} times (restarts or crashes); giving up",
        )
    return replace(v, status="queued", interruptions=interruptions)


def stopped_by_cancel(v: Variation) -> Variation:
    """A running variation whose ffmpeg was stopped because its job was cancelled."""
    _require(v, "be stopped by a cancel", "processing")
    return replace(v, status="cancelled")


def skip_for_cancel(v: Variation) -> Variation:
    """A variation that had not started when its job was cancelled."""
    _require(v, "be skipped by a cancel", "queued")
    return replace(v, status="cancelled")


def retry(v: Variation) -> Variation:
    """A failed variation, queued again with its recorded effects and a fresh budget."""
    _require(v, "be retried", "failed")
    return replace(v, status="queued", failures=0, interruptions=0, progress=0, error=None)


def resume(v: Variation) -> Variation:
    """A variation a cancel left unmade, queued again."""
    _require(v, "be resumed", "cancelled")
    return replace(v, status="queued", progress=0, error=None)


def fail_with_job(v: Variation, error: str) -> Variation:
    """A variation not started yet whose job failed as a whole (`fail_job`)."""
    _require(v, "fail with its job", "queued")
    return replace(v, status="failed", error=error)


def running_percent(percent: float) -> int:
    """How far a running attempt is, as recorded and shown: a whole percent,
    0–99. 100 is for a finished output only."""
    return max(0, min(99, int(percent)))


def progress(v: Variation, percent: float) -> Variation:
    """Progress only rises while an attempt runs; 100 is for a finished output."""
    _require(v, "report progress", "processing")
    return replace(v, progress=max(v.progress, running_percent(percent)))


# --- jobs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    status: str
    cancel_requested: bool = False
    progress: int = 0
    error: str | None = None

    def describe(self) -> str:
        return "cancelled" if self.cancel_requested and self.status == "processing" else self.status


@dataclass(frozen=True)
class Settlement:
    """A job's final status, and what to record with it."""

    status: str
    progress: int
    error: str | None = None


def count(variations: Iterable[Variation]) -> dict[str, int]:
    counts = dict.fromkeys(VARIATION_STATUSES, 0)
    for v in variations:
        counts[v.status] += 1
    return counts


def made_share(counts: Mapping[str, int]) -> int:
    """How much of the job was made: round(100 × completed / total)."""
    total = sum(counts.values())
    return round(100 * counts.get("completed", 0) / total) if total else 0


def settle(job: Job, variations: Iterable[Variation]) -> Settlement | None:
    """The final status of a job none of whose variations is queued or
    running; None while some still are, or when it is final already.

    Completion wins: a cancel that stopped or skipped nothing leaves the job
    completed. A job with some outputs and some failed variations is
    completed (each failed file carries its own error); with none, failed.
    """
    variations = list(variations)
    if job.status in FINAL:
        return None
    counts = count(variations)
    if counts["queued"] or counts["processing"]:
        return None
    share = made_share(counts)
    if counts["cancelled"]:
        return Settlement("cancelled", share)
    if counts["completed"] == 0:
        first_error = next((v.error for v in variations if v.error), None)
        return Settlement("failed", share, first_error or "every variation failed")
    return Settlement("completed", share)


def start(job: Job) -> Job:
    """The first variation of a queued job is claimed."""
    if job.status != "queued" or job.cancel_requested:
        raise IllegalTransition(f"a {job.describe()} job cannot start")
    return replace(job, status="processing")


def request_cancel(job: Job) -> Job:
    """A cancel is accepted: no variation of the job may start any more.
    The job settles once its running ffmpeg processes have stopped."""
    if job.status in FINAL:
        raise IllegalTransition(f"a {job.status} job cannot be cancelled")
    return replace(job, cancel_requested=True)


def fail_job(job: Job, error: str) -> Job:
    """A queued job that cannot run at all (no disk for it, stale in the queue);
    its queued variations fail with it (`fail_with_job`), and a retried or
    resumed job keeps what it had made (and the share it shows)."""
    if job.status != "queued":
        raise IllegalTransition(f"a {job.describe()} job cannot be failed as a whole")
    return replace(job, status="failed", error=error)


def can_retry(job: Job, variations: Iterable[Variation]) -> str | None:
    """None when `retry` applies; else why not, as a sentence for a 409."""
    if job.status not in FINAL:
        return f"the job is still {job.status}; retry it when it has finished"
    if not any(v.status == "failed" for v in variations):
        return "the job has no failed variations to retry"
    return None


def can_resume(job: Job) -> str | None:
    """None when `resume` applies; else why not."""
    if job.status != "cancelled":
        return f"only a cancelled job can be resumed; this one is {job.describe()}"
    return None


def reopen(job: Job) -> Job:
    """A finished job gets work again (retry, resume): back in the queue."""
    if job.status not in FINAL:
        raise IllegalTransition(f"a {job.status} job is not finished")
    return replace(job, status="queued", cancel_requested=False, error=None)


def may_queue(unfinished: int, cap: int) -> bool:
    """A new job joins the queue only while fewer than `cap` (MAX_QUEUED_JOBS)
    jobs are unfinished, queued or running."""
    return unfinished < cap


def may_expire(job: Job) -> bool:
    """Only finished jobs are ever deleted by expiry or eviction."""
    return job.status in FINAL


def running_progress(previous: int, weighted: Iterable[tuple[float, Variation]]) -> int:
    """Overall progress of a running job: its variations' progress weighted by
    their source's duration; it never goes backwards and stays below 100.
    Variations a cancel stopped or skipped still count (with what they had
    made): while the cancel settles, the job's share neither jumps up nor
    back. Once settled, a cancelled job shows the share it made (`settle`)."""
    done = total = 0.0
    for weight, v in weighted:
        total += weight
        done += weight * (100 if v.status == "completed" else v.progress)
    return max(previous, running_percent(done / total if total else 0))
