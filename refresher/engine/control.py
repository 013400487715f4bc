"""The control block: a few words of shared memory that the web workers, the
supervisor and its encode workers all see.

It is one `multiprocessing.RawArray` of 64-bit integers, created before
gunicorn forks its web workers and handed to the supervisor when it starts,
so every process of the host maps the same memory. It carries:

* cancel flags, the fast path from a web worker's cancel to the encode worker
  running the job's ffmpeg: slot `seq % SLOTS` holds the `seq` (never reused)
  of a job whose cancel was accepted, and a worker checks that its own job's
  slot holds its own seq, so a reused slot never stops another job;
* the supervisor's heartbeat, pid and standby word, for health checks and for
  the process that watches it;
* the shutdown word, which tells encode workers to stop their ffmpeg.

The store stays the source of truth: the supervisor re-writes cancel flags
from it on every tick. Single aligned 64-bit stores and loads are atomic on
the platforms we run on, so no lock is needed (and none can be left held by a
killed process).
"""
from __future__ import annotations

import ctypes
import multiprocessing
import time

SLOTS = 4096
_HEARTBEAT, _SUPERVISOR_PID, _SHUTDOWN, _CLEAN_EXIT, _STANDBY = range(5)
_HEADER = 8


class ControlBlock:
    def __init__(self, array=None):
        self.array = array if array is not None else multiprocessing.RawArray(ctypes.c_int64, _HEADER + SLOTS)

    # --- cancels -------------------------------------------------------------
    def request_cancel(self, job_seq: int) -> None:
        self.array[_HEADER + job_seq % SLOTS] = job_seq

    def is_cancelled(self, job_seq: int) -> bool:
        return self.array[_HEADER + job_seq % SLOTS] == job_seq

    def clear_cancel(self, job_seq: int) -> None:
        if self.array[_HEADER + job_seq % SLOTS] == job_seq:
            self.array[_HEADER + job_seq % SLOTS] = 0

    # --- the supervisor ---------------------------------------------------------
    def beat(self, pid: int, standby: bool = False) -> None:
        """The supervisor is alive; `standby` while another one owns DATA_DIR."""
        self.array[_SUPERVISOR_PID] = pid
        self.array[_STANDBY] = 1 if standby else 0
        self.array[_HEARTBEAT] = int(time.time() * 1000)

    def supervisor_alive(self, within: float = 5.0) -> bool:
        beat = self.array[_HEARTBEAT]
        return beat > 0 and time.time() * 1000 - beat < within * 1000

    def supervisor_standby(self) -> bool:
        return self.array[_STANDBY] == 1

    def supervisor_pid(self) -> int:
        return self.array[_SUPERVISOR_PID]

    def mark_stopped(self, clean: bool = True) -> None:
        """The supervisor is gone; `clean` when it stopped because it was asked to."""
        self.array[_HEARTBEAT] = 0
        self.array[_CLEAN_EXIT] = 1 if clean else 0

    def stopped_cleanly(self) -> bool:
        return self.array[_CLEAN_EXIT] == 1

    # --- shutdown --------------------------------------------------------------------
    def set_shutdown(self, value: bool) -> None:
        self.array[_SHUTDOWN] = 1 if value else 0

    def shutting_down(self) -> bool:
        return self.array[_SHUTDOWN] == 1
