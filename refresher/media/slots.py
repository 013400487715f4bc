"""A few ffmpeg probes at a time per host, whatever arrives.

Every uploaded file is probed (and a job's first file thumbnailed) by an
ffmpeg that the web worker which received it starts. Each of those may use
up to ffmpeg.PROBE_MEMORY_LIMIT, so a burst of uploads would otherwise cost
that much times the number of threads of every web worker. The slots are
lock files under DATA_DIR/run, taken with flock(2): every thread of every
gunicorn worker of the host (even of several servers sharing DATA_DIR)
competes for the same few, and a killed process's lock goes with it.
"""

from __future__ import annotations

import fcntl
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROBES_AT_ONCE = 2  # per host: an 8K probe takes about 250 MB, and a host has cores to encode with
_turn = itertools.count()


class ProbeSlots:
    def __init__(self, folder: Path, count: int = PROBES_AT_ONCE):
        self.paths = [Path(folder) / f"probe-slot-{n}.lock" for n in range(count)]

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Wait for a free slot, keep it for the `with` block."""
        self.paths[0].parent.mkdir(parents=True, exist_ok=True)
        # Each open() is a lock of its own, so threads of one process exclude each other too.
        fds = [os.open(path, os.O_RDWR | os.O_CREAT, 0o600) for path in self.paths]
        try:
            if not any(_try_lock(fd) for fd in fds):
                # All taken: wait for one (in turn, so waiters spread over the slots).
                fcntl.flock(fds[next(_turn) % len(fds)], fcntl.LOCK_EX)
            yield
        finally:
            for fd in fds:
                os.close(fd)  # releases the lock held through it


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
