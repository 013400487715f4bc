"""The shared-memory cancel table: the fast path from a web worker's cancel to
the pool worker that runs the job's ffmpeg.

It is one `multiprocessing.RawArray` of 64-bit integers, created before
gunicorn forks so that the web workers, the supervisor and its pool workers
all map the same memory. Slot `seq % SLOTS` holds the `seq` (a number SQLite
never reuses) of a job whose cancel was accepted; a pool worker checks that its
own job's slot holds its own seq. A slot reused by a later job therefore never
stops an earlier one, and a cancel of job A never stops job B. The store stays
the source of truth: the supervisor re-writes flags from it on every tick.

A few header words carry the supervisor's heartbeat and the shutdown flag.
Single aligned 64-bit stores and loads are atomic on the platforms we run on,
so no lock is needed (and no lock can be left held by a killed process).
"""
from __future__ import annotations

import ctypes
import multiprocessing
import time

SLOTS = 4096
_HEARTBEAT, _SUPERVISOR_PID, _SHUTDOWN, _CLEAN_EXIT, _STANDBY = range(5)
_HEADER = 8


class CancelTable:
    def __init__(self, array=None):
        self._a = array if array is not None else multiprocessing.RawArray(ctypes.c_int64, _HEADER + SLOTS)

    # --- cancels -------------------------------------------------------------
    def request_cancel(self, job_seq: int) -> None:
        self._a[_HEADER + job_seq % SLOTS] = job_seq

    def is_cancelled(self, job_seq: int) -> bool:
        return self._a[_HEADER + job_seq % SLOTS] == job_seq

    def clear(self, job_seq: int) -> None:
        if self._a[_HEADER + job_seq % SLOTS] == job_seq:
            self._a[_HEADER + job_seq % SLOTS] = 0

    # --- the supervisor's header -----------------------------------------------
    def beat(self, pid: int, standby: bool = False) -> None:
        """The supervisor is alive; `standby` while another one owns DATA_DIR."""
        self._a[_SUPERVISOR_PID] = pid
        self._a[_STANDBY] = 1 if standby else 0
        self._a[_HEARTBEAT] = int(time.time() * 1000)

    def supervisor_standby(self) -> bool:
        return self._a[_STANDBY] == 1

    def supervisor_alive(self, within: float = 5.0) -> bool:
        return self._a[_HEARTBEAT] > 0 and time.time() * 1000 - self._a[_HEARTBEAT] < within * 1000

    def supervisor_pid(self) -> int:
        return self._a[_SUPERVISOR_PID]

    def mark_stopped(self, clean: bool = True) -> None:
        """The supervisor is gone; `clean` when it stopped because it was asked to."""
        self._a[_HEARTBEAT] = 0
        self._a[_CLEAN_EXIT] = 1 if clean else 0

    def stopped_cleanly(self) -> bool:
        return self._a[_CLEAN_EXIT] == 1


    def set_shutdown(self, value: bool) -> None:
        self._a[_SHUTDOWN] = 1 if value else 0

    def shutting_down(self) -> bool:
        return self._a[_SHUTDOWN] == 1


_installed: CancelTable | None = None


def install(table: CancelTable) -> CancelTable:
    """Make `table` the process-wide table; children forked later inherit it."""
    global _installed
    _installed = table
    return table


def installed() -> CancelTable | None:
    return _installed
