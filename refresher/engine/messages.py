"""What crosses an encode worker's pipe, in both directions, with its shape
declared: the supervisor sends a `Task`; the worker answers with
("started", variation id, `Started`), ("progress", variation id, percent)
and, once, ("done", variation id, `Outcome`). Plain values only, so that an
encode worker unpickles them without loading the supervisor's libraries."""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class Task(TypedDict):
    """One variation to encode."""

    id: str  # the variation's
    job_id: str
    job_seq: int  # the job's slot in the control block's cancel flags
    upload_path: str  # the source's storage key
    output_path: str  # where the output is stored once made
    duration: float | None  # the source's, as probed
    effects: dict[str, Any]  # media.effects' description of this variation
    media: dict[str, Any]  # MediaInfo.as_dict() of the source


class Started(TypedDict):
    workerPid: int
    ffmpegPid: int


class Outcome(TypedDict, total=False):
    """How one attempt ended; `outcome` always, the rest as it applies."""

    outcome: Literal["completed", "failed", "cancelled", "interrupted"]
    error: str  # failed: what went wrong, as a sentence for the user
    detail: str  # failed: ffmpeg's own last lines, for the log only
    size: int  # completed: the output's bytes
    elapsed: float  # completed: seconds ffmpeg ran
    stopStage: str | None  # cancelled or interrupted: "q", "SIGTERM" or "SIGKILL"


def task_of(claimed: dict) -> Task:
    """The task for a variation the store has claimed (its row, with its
    job's and source's fields)."""
    return Task(
        id=claimed["id"],
        job_id=claimed["job_id"],
        job_seq=claimed["job_seq"],
        upload_path=claimed["upload_path"],
        output_path=claimed["output_path"],
        duration=claimed["duration"],
        effects=claimed["effects"],
        media=claimed["media"],
    )
