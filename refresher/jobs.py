"""What people do with jobs once they exist: look at them, cancel them,
retry or resume them, delete them. The HTTP views, the web pages and the token commands call these;
the rules of each change live in `rules`, and the store executes them."""

from __future__ import annotations

import logging
import time

from . import intake, lifecycle, contract, rules
from .engine.control import ControlBlock
from .errors import Rejected
from .storage import Storage
from .shapes import iso, job_detail, job_summary
from .settings import Settings
from .store import QueueFull, Store

log = logging.getLogger(__name__)

CANCEL_SETTLE_SECONDS = 15.0  # > the q → SIGTERM → SIGKILL ladder (4 s), with room to spare
CANCEL_POLL_SECONDS = 0.02


def _no_such_job(job_id: str) -> Rejected:
    return Rejected(404, f"no job with id {job_id[: contract.MAX_ID_LENGTH]!r}")


def find_job(store: Store, job_id: str) -> dict:
    job = store.get_job(job_id) if len(job_id) <= contract.MAX_ID_LENGTH else None
    if job is None:
        raise _no_such_job(job_id)
    return job


def detail(store: Store, job_id: str) -> dict | None:
    """The job as GET /api/jobs/<id> shows it; None when there is no such job."""
    found = store.get_job_whole(job_id) if len(job_id) <= contract.MAX_ID_LENGTH else None
    return job_detail(*found) if found else None


def find_detail(store: Store, job_id: str) -> dict:
    """The job as GET /api/jobs/<id> shows it; 404 when there is no such job."""
    found = detail(store, job_id)
    if found is None:
        raise _no_such_job(job_id)
    return found


def summaries(store: Store, limit: int = contract.DEFAULT_LIST_LIMIT, status: str | None = None) -> list[dict]:
    return [job_summary(row) for row in store.list_jobs(limit, status)]


def cancel_job(store: Store, control: ControlBlock | None, job_id: str, ttl: float) -> tuple[dict, bool]:
    """Accept a cancel and wait until the job has settled (no ffmpeg of it
    alive). Returns the answer and whether it settled in time."""
    find_job(store, job_id)
    try:
        job = store.request_cancel(job_id, time.time(), ttl)
    except rules.IllegalTransition:
        status = find_job(store, job_id)["status"]
        raise Rejected(409, f"job {job_id} is already {status}", status=status) from None
    if job is not None and control is not None and job["status"] not in rules.FINAL:
        control.request_cancel(job["seq"])  # the fast path to the running ffmpeg
    deadline = time.monotonic() + CANCEL_SETTLE_SECONDS
    while job is not None and job["status"] not in rules.FINAL and time.monotonic() < deadline:
        time.sleep(CANCEL_POLL_SECONDS)
        job = store.get_job(job_id)
    current = detail(store, job_id)
    if job is None or current is None:
        raise Rejected(404, f"job {job_id} was deleted")
    answer = {
        "jobId": job_id,
        "status": job["status"],
        "revision": job["revision"],
        "completedVariations": current["completedVariations"],
        "totalVariations": current["totalVariations"],
        "cancelledAt": iso(job["cancelled_at"] or job["cancel_requested_at"]),
    }
    return answer, job["status"] in rules.FINAL


def no_encoding_host(store: Store, host_timeout: float) -> bool:
    """Whether no host anywhere encodes: no supervisor, here or on a worker
    process, has sent a heartbeat within HOST_TIMEOUT_SECONDS. Queued jobs
    then wait until one starts (e.g. a web process with ENCODE_WORKERS=0 and
    no worker process running)."""
    return not store.live_hosts(time.time(), host_timeout)


def work_queued(control: ControlBlock | None) -> None:
    """Work was just queued: wake this host's supervisor, if it runs here, so it
    claims the work now rather than at its next turn (other hosts look at
    theirs)."""
    if control is not None:
        control.wake_supervisor()


def finished_job(store: Store, job_id: str, then: str) -> dict:
    job = find_job(store, job_id)
    if job["status"] in rules.UNFINISHED:
        raise Rejected(409, f"job {job['id']} is still {job['status']}; {then}", status=job["status"])
    return job


def delete_job(store: Store, storage: Storage, job_id: str) -> None:
    finished_job(store, job_id, "cancel it before deleting it")
    lifecycle.delete_job_everywhere(store, storage, job_id)
    log.info("job %s deleted with its files", job_id)


def stored_sources(storage: Storage, store: Store, job: dict, now: float | None = None) -> list[dict]:
    """The job's source files, for retry, resume and rerun; a 410 when the job
    expired or a source is gone (evicted, or a job from before sources were kept)."""
    now = time.time() if now is None else now
    if job["status"] in rules.FINAL and job["expires_at"] <= now:
        raise Rejected(410, f"job {job['id']} has expired and its sources are gone; upload the videos again")
    files = store.get_job_files(job["id"])
    for f in files:
        if not f["upload_path"] or not storage.exists(f["upload_path"]):
            raise Rejected(410, f"the source {f['name']} of job {job['id']} is gone; upload the videos again")
    return files


def reopen_job(
    store: Store, control: ControlBlock | None, storage: Storage, job_id: str, kind: str, settings: Settings
) -> dict:
    """retry (failed variations) or resume (variations a cancel left unmade):
    the job goes back to the queue, under the same cap as an upload
    (MAX_QUEUED_JOBS: 503); returns it as GET /api/jobs/<id> shows it."""
    job = find_job(store, job_id)
    stored_sources(storage, store, job)
    try:
        reopened = store.reopen_job(
            job_id, kind, time.time(), settings.job_ttl_seconds, max_unfinished=settings.max_queued_jobs
        )
    except rules.IllegalTransition as exc:
        status = find_job(store, job_id)["status"]
        raise Rejected(409, str(exc), status=status) from None
    except QueueFull as full:
        raise intake.queue_full(full) from None
    if reopened is None:
        raise Rejected(404, f"job {job_id} was deleted")
    if control is not None:
        control.clear_cancel(reopened[0]["seq"])  # the supervisor also clears it when it claims the job's work
    work_queued(control)
    # as the reopen left it (queued), whatever the supervisor has claimed since
    shown = job_detail(*reopened)
    log.info(
        "job %s %s: %d variation(s) queued again, %d kept",
        job_id,
        "retried" if kind == "retry" else "resumed",
        shown["totalVariations"] - shown["completedVariations"],
        shown["completedVariations"],
    )
    return shown
