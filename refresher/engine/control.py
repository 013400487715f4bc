"""The control block: a few words of shared memory that the web workers, the
supervisor and its encode workers of one host all see.

It is a small file under DATA_DIR/run, mapped into memory by every process
(`mmap`, shared): gunicorn's master makes it before it forks the web
workers, and the supervisor and its encode workers, each started as a fresh
interpreter, map it by its path. So nothing has to be inherited through a
fork, and a process that starts later (a replacement supervisor) finds the
same memory. It carries:

* cancel flags, the fast path from a web worker's cancel to the encode worker
  running the job's ffmpeg: slot `seq % SLOTS` holds the `seq` (never reused)
  of a job whose cancel was accepted, and a worker checks that its own job's
  slot holds its own seq, so a reused slot never stops another job;
* the supervisor's heartbeat, pid and standby word, for health checks and for
  the process that watches it;
* the shutdown word, which tells encode workers to stop their ffmpeg;
* the supervisor's wake-up address: a web worker that has just queued work
  (a new job, a retry, a resume) sends a datagram there, so the supervisor
  claims it at once instead of at its next turn (`wake_supervisor`).

The store stays the source of truth: the supervisor re-writes cancel flags
from it on every tick. Single aligned 64-bit stores and loads are atomic on
the platforms we run on, so no lock is needed (and none can be left held by a
killed process).
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import secrets
import socket
import tempfile
import time
from pathlib import Path

SLOTS = 4096
_HEARTBEAT, _SUPERVISOR_PID, _SHUTDOWN, _CLEAN_EXIT, _STANDBY, _WAKE = range(6)
_HEADER = 8
_WORDS = _HEADER + SLOTS
SIZE = _WORDS * 8
PREFIX = "control-"


class ControlBlock:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        fd = os.open(self.path, os.O_RDWR)
        try:
            # Held shared while this process lives: the sweep removes only
            # blocks nobody holds (left behind by a killed server).
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)  # the mapping and its lock stay; the lock goes with the mapping's file
        self.array = (ctypes.c_int64 * _WORDS).from_buffer(self._map)
        self._wake_number: int | None = None  # the wake-up address this process published, if any

    @classmethod
    def create(cls, folder: str | Path) -> ControlBlock:
        """A new, zeroed block in `folder` (DATA_DIR/run)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=PREFIX, dir=folder)
        try:
            os.ftruncate(fd, SIZE)
        finally:
            os.close(fd)
        return cls(path)

    def remove(self) -> None:
        """Delete the file; processes that mapped it keep their memory."""
        self.path.unlink(missing_ok=True)

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

    # --- waking the supervisor ------------------------------------------------------------
    def open_wake_socket(self) -> socket.socket:
        """The supervisor's: a datagram socket that `wake_supervisor` reaches,
        bound to a fresh abstract address (Linux; no file to leave behind),
        published here. Its caller waits on it and reads what came."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        number = secrets.randbits(62) + 1
        sock.bind(_wake_address(number))
        self.array[_WAKE] = self._wake_number = number
        return sock

    def close_wake_socket(self, sock: socket.socket) -> None:
        """Unpublish the address (unless a newer supervisor has published its own), close the socket."""
        if self.array[_WAKE] == self._wake_number:
            self.array[_WAKE] = 0
        sock.close()

    def wake_supervisor(self) -> None:
        """Tell this host's supervisor that work was queued. Best effort: with
        no supervisor listening the datagram is dropped, and the supervisor
        looks at its next turn anyway."""
        number = self.array[_WAKE]
        if not number:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK) as sock:
                sock.sendto(b"w", _wake_address(number))
        except OSError:
            pass

    # --- shutdown --------------------------------------------------------------------
    def set_shutdown(self, value: bool) -> None:
        self.array[_SHUTDOWN] = 1 if value else 0

    def shutting_down(self) -> bool:
        return self.array[_SHUTDOWN] == 1


def _wake_address(number: int) -> bytes:
    return b"\0video-refresher-wake-%d" % number


def drain(sock: socket.socket) -> None:
    """Read every datagram waiting on a wake socket."""
    try:
        while sock.recv(64):
            pass
    except (BlockingIOError, OSError):
        pass


def remove_abandoned(folder: str | Path) -> list[Path]:
    """Blocks no live process holds (their server was killed): delete them."""
    removed = []
    for path in Path(folder).glob(PREFIX + "*"):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # in use
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
