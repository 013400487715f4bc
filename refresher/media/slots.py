"""A few ffmpeg probes at a time per host, whatever arrives, and never all
of them for one client.

Every uploaded file is probed (and a job's first file thumbnailed) by an
ffmpeg that the web worker which received it starts. Each of those may use
up to ffmpeg.PROBE_MEMORY_LIMIT, so a burst of uploads would otherwise cost
that much times the number of threads of every web worker. The slots are
lock files under DATA_DIR/run, taken with flock(2): every thread of every
gunicorn worker of the host (even of several servers sharing DATA_DIR)
competes for the same few, and a killed process's lock goes with it.

First come, first served, two requests of slow-to-probe files from one
client held both slots, and another client's 63 KB upload waited 105 s
behind them. So a client (its API token or its session) holds one slot at
most at once: its further probes wait on a lock of its own (one of
CLIENT_LOCKS files, chosen by a hash of the client), not in the host's
queue, and the other slots stay for everyone else. How long a probe
may hold a slot is bounded too (`intake.PROBE_SECONDS`).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROBES_AT_ONCE = 2  # per host: an 8K probe takes about 250 MB, and a host has cores to encode with
CLIENT_LOCKS = 64  # lock files the clients are spread over (two sharing one share its cap)
_turn = itertools.count()


class ProbeSlots:
    def __init__(self, folder: Path, count: int = PROBES_AT_ONCE):
        self.folder = Path(folder)
        self.paths = [self.folder / f"probe-slot-{n}.lock" for n in range(count)]

    def client_path(self, client: str) -> Path:
        """The lock that keeps `client` to one slot at once."""
        bucket = int.from_bytes(hashlib.sha256(client.encode()).digest()[:4], "big") % CLIENT_LOCKS
        return self.folder / f"probe-client-{bucket}.lock"

    @contextmanager
    def hold(self, client: str | None = None) -> Iterator[None]:
        """Wait for a free slot, keep it for the `with` block. A `client`
        first waits for its own turn, so it holds one slot at most."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # Each open() is a lock of its own, so threads of one process exclude each other too.
        own = os.open(self.client_path(client), os.O_RDWR | os.O_CREAT, 0o600) if client is not None else None
        fds: list[int] = []
        try:
            if own is not None:
                fcntl.flock(own, fcntl.LOCK_EX)
            fds = [os.open(path, os.O_RDWR | os.O_CREAT, 0o600) for path in self.paths]
            if not any(_try_lock(fd) for fd in fds):
                # All taken: wait for one (in turn, so waiters spread over the slots).
                fcntl.flock(fds[next(_turn) % len(fds)], fcntl.LOCK_EX)
            yield
        finally:
            for fd in fds:
                os.close(fd)  # releases the lock held through it
            if own is not None:
                os.close(own)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
