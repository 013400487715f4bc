"""Pool work: encode one variation with one ffmpeg process.

Runs inside a multiprocessing pool worker owned by the supervisor. It writes
its progress and, on success, the finished output straight to the store (so a
finished variation is durable the moment it exists), and returns an outcome
for the supervisor to act on: completed, cancelled, interrupted or failed.

The output is encoded under a temporary name in the job's folder and renamed
only after ffmpeg finished on its own with status 0, so a partial file can
never pass for an output. "Cancelled" is decided from the cancel flag, never
from ffmpeg's exit code (it exits 0 after `q` with a truncated file).
"""
from __future__ import annotations

import os
import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .. import store
from ..media import effects as fx
from ..media import ffmpeg
from .cancel_table import CancelTable

PROGRESS_WRITE_INTERVAL = 0.5  # seconds between progress writes per variation


@dataclass
class _WorkerState:
    conn: object
    table: CancelTable
    data_dir: Path
    binary: str
    stall_seconds: float
    terminating: bool = False
    busy: bool = False


_state: _WorkerState | None = None


def init_worker(db_path: str, table_array, data_dir: str, binary: str, stall_seconds: float) -> None:
    """Pool initializer: own connection, signals, die with the supervisor."""
    global _state
    # A killed supervisor takes its workers (and so their ffmpeg) along. The
    # "parent" is the forking thread: workers the pool forks later to replace
    # dead ones come from its worker-handler thread, and die when the pool closes.
    ffmpeg._die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    signal.signal(signal.SIGTERM, _on_sigterm)
    _state = _WorkerState(conn=store.connect(db_path), table=CancelTable(table_array),
                          data_dir=Path(data_dir), binary=binary, stall_seconds=stall_seconds)


def _on_sigterm(signum, frame) -> None:
    # A platform shutdown signals every process at once. A busy worker stops its
    # ffmpeg gracefully (the supervisor requeues the variation); an idle one
    # waits for the supervisor to close the pool. Exiting here could leave the
    # pool's shared queue lock held, and every other worker stuck behind it.
    if _state is not None and _state.busy:
        _state.terminating = True


def partial_path(output_path: Path) -> Path:
    return output_path.with_name(output_path.stem + ".part" + output_path.suffix)


def encode_variation(task: dict) -> dict:
    """Encode the variation described by `task` (a row from the dispatcher)."""
    s = _state
    assert s is not None, "init_worker was not called"
    variation_id, job_seq = task["id"], task["job_seq"]
    output = s.data_dir / task["output_path"]
    partial = partial_path(output)
    media = task["media"]
    effects = task["effects"]

    def should_stop() -> bool:
        return s.table.is_cancelled(job_seq) or s.table.shutting_down() or s.terminating

    def stop_outcome() -> dict:
        cancelled = s.table.is_cancelled(job_seq)
        return {"id": variation_id, "outcome": "cancelled" if cancelled else "interrupted"}

    if should_stop():
        return stop_outcome()

    s.busy = True
    try:
        now = time.time()
        store.record_variation_start(s.conn, variation_id, os.getpid(), None, now)
        expected = fx.expected_duration(task.get("duration"), effects)
        last = {"at": 0.0, "percent": 0}

        def on_start(pid: int) -> None:
            store.record_variation_start(s.conn, variation_id, os.getpid(), pid, time.time())

        def on_progress(seconds: float) -> None:
            if not expected:
                return
            percent = max(0, min(99, int(seconds / expected * 100)))
            t = time.monotonic()
            if percent > last["percent"] and t - last["at"] >= PROGRESS_WRITE_INTERVAL:
                last.update(at=t, percent=percent)
                try:
                    store.record_variation_progress(s.conn, variation_id, percent)
                except sqlite3.OperationalError:
                    pass  # a busy or full database costs one progress update, not the encode

        cmd = fx.encode_command(s.binary, Path(task["source_path"]), partial, effects,
                                media["width"], media["height"], media["hasAudio"], media.get("audioCodec"))
        try:
            result = ffmpeg.run_ffmpeg(cmd, should_stop=should_stop, on_start=on_start,
                                       on_progress=on_progress, stall_seconds=s.stall_seconds)
        except OSError as exc:  # ffmpeg could not be started at all
            _remove(partial)
            return {"id": variation_id, "outcome": "failed", "error": f"could not start ffmpeg: {exc}"}

        if result.ok and partial.exists():
            try:
                os.replace(partial, output)
                store.complete_variation(s.conn, variation_id, output.stat().st_size, time.time())
            except (OSError, sqlite3.Error) as exc:
                _remove(output)
                return {"id": variation_id, "outcome": "failed", "error": f"could not save the output: {exc}"}
            return {"id": variation_id, "outcome": "completed", "elapsed": result.elapsed}
        _remove(partial)  # after ffmpeg is reaped: nothing can write to it any more
        if result.stopped or should_stop():
            # ours to stop, or it died of the same shutdown signal that reached us
            outcome = stop_outcome()
            outcome["stopStage"] = result.stop_stage
            return outcome
        return {"id": variation_id, "outcome": "failed", "error": result.reason()}
    finally:
        s.busy = False


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
