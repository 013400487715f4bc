"""An encode worker: a process of the supervisor's that runs one ffmpeg at a time.

The supervisor starts each worker itself, from a clean interpreter, with one
pipe of its own: it sends a task (one variation) only to an idle worker, and
the worker answers on the same pipe — when ffmpeg started, how far it got,
and how the attempt ended. A worker never touches the database; if it dies,
the supervisor sees its process sentinel and knows exactly which task it
lost.

The source is read from this host's disk (`Storage.local_copy`: the stored
file itself, or a copy fetched once per host from object storage). The
output is encoded under a temporary name on this host's disk
(`Storage.work_path`) and stored only after ffmpeg finished on its own with
status 0, so a partial file can never pass for an output. "Cancelled" is decided from the cancel flag, never
from ffmpeg's exit code (it exits 0 after `q` with a truncated file).
"""

from __future__ import annotations

import os
import signal
import time
from multiprocessing.connection import Connection

from .. import rules
from ..media import effects as fx
from ..media import ffmpeg
from ..storage import Storage, StorageError, open_storage
from . import lifeline
from .control import ControlBlock
from .messages import Outcome, Task

PROGRESS_MESSAGE_INTERVAL = 0.25  # seconds between progress messages per attempt


class Encoder:
    """The encode worker's work: tasks from the pipe, one ffmpeg each."""

    def __init__(self, pipe: Connection, control: ControlBlock, storage: Storage, binary: str, stall_seconds: float):
        self.pipe = pipe
        self.control = control
        self.storage = storage
        self.binary = binary
        self.stall_seconds = stall_seconds
        self.terminating = False
        self.busy = False

    def serve(self) -> None:
        """Take tasks until the supervisor says stop (None) or goes away."""
        while not self.terminating:
            try:
                task = self.pipe.recv()
            except (EOFError, OSError):
                return  # the supervisor is gone
            if task is None:
                return
            self.busy = True
            try:
                outcome = self.encode(task)
            finally:
                self.busy = False
            self.pipe.send(("done", task["id"], outcome))

    def encode(self, task: Task) -> Outcome:
        """Encode one variation; the outcome is completed, cancelled,
        interrupted or failed."""
        variation_id, job_seq = task["id"], task["job_seq"]
        partial = self.storage.work_path(task["output_path"])
        effects, media = task["effects"], task["media"]

        def cancelled() -> bool:
            return self.control.is_cancelled(job_seq)

        def should_stop() -> bool:
            return cancelled() or self.control.shutting_down() or self.terminating

        def shutting_down() -> bool:  # and not a cancel, whose stop follows the contract's ladder
            return not cancelled() and (self.control.shutting_down() or self.terminating)

        def stop_outcome(stage: str | None = None) -> Outcome:
            return {"outcome": "cancelled" if cancelled() else "interrupted", "stopStage": stage}

        if should_stop():
            return stop_outcome()
        expected = fx.expected_duration(task["duration"], effects)
        last = {"at": 0.0, "percent": -1}

        def on_start(pid: int) -> None:
            self.pipe.send(("started", variation_id, {"workerPid": os.getpid(), "ffmpegPid": pid}))

        def on_progress(seconds: float) -> None:
            if not expected:
                return
            percent = rules.running_percent(seconds / expected * 100)
            now = time.monotonic()
            if percent > last["percent"] and now - last["at"] >= PROGRESS_MESSAGE_INTERVAL:
                last.update(at=now, percent=percent)
                self.pipe.send(("progress", variation_id, percent))

        try:
            source = self.storage.local_copy(task["upload_path"])
        except (OSError, StorageError) as exc:
            return {"outcome": "failed", "error": f"could not read the source: {exc}"}
        if should_stop():
            return stop_outcome()
        # A speed change needs the source's frame count to end where it ends:
        # counted once at intake and kept with its media; a source stored
        # before counts were kept is counted here.
        frames: tuple[int, float] | None = None
        if effects.get("speed"):
            stored = ffmpeg.stored_video_frames(media)
            frames = ffmpeg.count_video_frames(self.binary, source) if stored is False else stored
        command = fx.encode_command(
            self.binary,
            source,
            partial,
            effects,
            media["width"],
            media["height"],
            media["hasAudio"],
            media.get("audioCodec"),
            duration=task["duration"],
            video_frames=frames,
        )
        try:
            result = ffmpeg.run_ffmpeg(
                command,
                should_stop=should_stop,
                on_start=on_start,
                on_progress=on_progress,
                stall_seconds=self.stall_seconds,
                hurry=shutting_down,
            )
        except OSError as exc:  # ffmpeg could not be started at all
            partial.unlink(missing_ok=True)
            return {"outcome": "failed", "error": f"could not start ffmpeg: {exc}"}
        if result.ok and partial.exists():
            try:
                size = self.storage.put(task["output_path"], partial)
                return {"outcome": "completed", "size": size, "elapsed": result.elapsed}
            except (OSError, StorageError) as exc:
                partial.unlink(missing_ok=True)
                return {"outcome": "failed", "error": f"could not save the output: {exc}"}
        partial.unlink(missing_ok=True)  # ffmpeg is reaped: nothing writes to it any more
        if result.stopped or should_stop():
            # ours to stop, or it died of the same shutdown signal that reached us
            return stop_outcome(result.stop_stage)
        return {"outcome": "failed", "error": result.reason(), "detail": result.raw_tail()}


def run_encoder(
    pipe: Connection, supervisor_pid: int, control_path: str, storage_spec: tuple, binary: str, stall_seconds: float
) -> None:
    """Entry point of an encode worker process; `storage_spec` is what
    `open_storage` takes (DATA_DIR, STORAGE_URL, HOST_ID)."""
    # A killed supervisor takes its workers, and so their ffmpeg, along.
    if not lifeline.follow_parent(signal.SIGKILL, supervisor_pid):
        return
    encoder = Encoder(pipe, ControlBlock(control_path), open_storage(*storage_spec), binary, stall_seconds)

    def on_sigterm(signum, frame):
        # Told to stop on its own (a platform shutdown signals every process):
        # an idle worker just goes; a busy one stops its ffmpeg gracefully,
        # reports the attempt, then goes.
        encoder.terminating = True
        if not encoder.busy:
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    encoder.serve()
