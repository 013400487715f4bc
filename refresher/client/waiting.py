"""Following a job until it is final, and what Ctrl-C means meanwhile.

Polling `GET /api/jobs/<id>` (the API keeps it fully supported) is simpler
and sturdier than holding an event stream open: a server restart or a
dropped connection only costs a retry. Ctrl-C never cancels silently: at a
terminal the client asks; without one it leaves the job running and says so.
"""

from __future__ import annotations

import sys
import time

from .api import Server
from .errors import INTERRUPTED, UNREACHABLE, ClientError
from .progress import Reporter

FINAL_STATUSES = ("completed", "failed", "cancelled")
POLL_SECONDS = 1.0
# How long the server may be unreachable (a restart, a network blip) before we give up.
UNREACHABLE_GRACE_SECONDS = 30.0


def follow(server: Server, job_id: str, reporter: Reporter) -> dict:
    """Show the job's progress until it reaches a final status; return it."""
    with reporter.job(job_id) as progress:
        unreachable_since = None
        while True:
            try:
                job = server.job(job_id)
            except ClientError as exc:
                if exc.code != UNREACHABLE:
                    raise
                now = time.monotonic()
                if unreachable_since is None:
                    unreachable_since = now
                    reporter.note(f"{exc.message}; retrying for {UNREACHABLE_GRACE_SECONDS:.0f} s")
                elif now - unreachable_since > UNREACHABLE_GRACE_SECONDS:
                    raise
                time.sleep(POLL_SECONDS)
                continue
            unreachable_since = None
            progress.show(job)
            if job["status"] in FINAL_STATUSES:
                return job
            time.sleep(POLL_SECONDS)


def settle(server: Server, job_id: str, timeout: float = 60.0) -> dict:
    """The job once it is final (a cancel may answer before the last ffmpeg stopped)."""
    deadline = time.monotonic() + timeout
    job = server.job(job_id)
    while job["status"] not in FINAL_STATUSES and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS / 2)
        job = server.job(job_id)
    return job


def ask_to_cancel(job_id: str) -> bool:
    """After Ctrl-C while waiting: True if the person wants the job cancelled.
    Raises the 'interrupted' ClientError when the answer is no or cannot be asked."""
    if not sys.stdin.isatty():
        raise ClientError(
            INTERRUPTED, f"interrupted; job {job_id} keeps running on the server (not cancelled: no terminal to ask)"
        )
    sys.stderr.write(f"\nCancel job {job_id} on the server? [y/N] ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    raise ClientError(
        INTERRUPTED,
        f"job {job_id} keeps running on the server; follow it with: python -m refresher.client status {job_id} --wait",
    )
