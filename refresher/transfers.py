"""What one client may hold of a web worker's threads: downloads and live
progress streams at once, and downloads that it reads too slowly.

A download (a ZIP or one output) and an event stream each hold a thread
for as long as they last, and a web worker has 32. One client reading 70
ZIPs at 1.5 KB/s held them all, for good. So a client (its API token, or
its session: bearer token or browser) runs at most a few of each at once,
counted per host across every web worker and thread (lock files under
DATA_DIR/run, taken with flock(2), so a killed process's go with it); one
more is answered `429`. And a download that hands the client less than
MIN_DOWNLOAD_KBPS over SLOW_DOWNLOAD_SECONDS is cut off: a watcher thread
of the web worker shuts its socket, which ends the send its thread is
blocked in.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STREAMS_PER_CLIENT = 4  # live progress streams; a browser opens one per job page
PIECE = 64 * 1024  # a download is handed to the server this much at a time, so that its progress shows
WATCH_EVERY = 1.0  # seconds


class ClientSlots:
    """At most `count` of one `kind` of thing per client, at once, on this host."""

    def __init__(self, folder: Path, kind: str, count: int):
        self.folder, self.kind, self.count = Path(folder), kind, count

    def take(self, client: str) -> Callable[[], None] | None:
        """A free slot of `client`'s, as the function that gives it back; None when all are taken."""
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = f"{self.kind}-{hashlib.sha256(client.encode()).hexdigest()[:32]}"
        for n in range(self.count):
            path = self.folder / f"{stem}-{n}.lock"
            fd = _lock(path)
            if fd is not None:
                return lambda: _unlock(path, fd)
        return None


def _lock(path: Path) -> int | None:
    """A lock on the file at `path`, or None when another holds it. The
    holder removes the file when it lets go (no file stays per client):
    a lock taken on a file that was removed meanwhile is tried again."""
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    return None


def _unlock(path: Path, fd: int) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.close(fd)


class _Transfer:
    def __init__(self, sock: socket.socket | None, what: str):
        self.sock, self.what = sock, what
        self.started = time.monotonic()
        self.sent = 0  # bytes handed to the server, which has written the ones before
        self.marks: deque[tuple[float, int]] = deque([(self.started, 0)])
        self.cut = False


class SlowReaders:
    """Cuts off downloads that stay below `min_rate` bytes a second over
    `window` seconds. One per web worker process; its thread starts with
    the first download."""

    def __init__(self, min_rate: float, window: float):
        self.min_rate, self.window = min_rate, window
        self.transfers: set[_Transfer] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def paced(self, chunks: Iterable[Any], sock: socket.socket | None, what: str, done: Callable[[], None]):
        """`chunks` in pieces of at most PIECE bytes, watched; `done` is called once they end, however."""
        transfer = _Transfer(sock, what)
        with self.lock:
            self.transfers.add(transfer)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._watch, name="slow-readers", daemon=True)
                self.thread.start()
        return _Paced(chunks, transfer, lambda: self._end(transfer, done))

    def _end(self, transfer: _Transfer, done: Callable[[], None]) -> None:
        with self.lock:
            self.transfers.discard(transfer)
        done()

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_EVERY)
            now = time.monotonic()
            with self.lock:
                transfers = list(self.transfers)
            for transfer in transfers:
                if self.too_slow(transfer, now):
                    self._cut(transfer, now)

    def too_slow(self, transfer: _Transfer, now: float) -> bool:
        """Whether fewer than min_rate × window bytes went out over the last window."""
        marks = transfer.marks
        marks.append((now, transfer.sent))
        while len(marks) > 1 and marks[1][0] <= now - self.window:
            marks.popleft()
        since, sent_then = marks[0]
        if transfer.cut or since > now - self.window:  # not a whole window yet
            return False
        return transfer.sent - sent_then < self.min_rate * self.window

    def _cut(self, transfer: _Transfer, now: float) -> None:
        transfer.cut = True
        log.info(
            "cut off %s read at %.1f KB/s (%d bytes in %.0f s): below the minimum of %.0f KB/s over %.0f s",
            transfer.what,
            (transfer.sent - transfer.marks[0][1]) / self.window / 1024,
            transfer.sent,
            now - transfer.started,
            self.min_rate / 1024,
            self.window,
        )
        if transfer.sock is not None:
            try:
                # What the kernel still holds for the client is dropped when the
                # socket is closed (a reset), and the send its thread is blocked
                # in ends at once.
                transfer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transfer.sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                if exc.errno not in (errno.ENOTCONN, errno.EBADF):
                    raise


class _Paced:
    """The response body of a watched download. Its close (the server calls
    it, however the transfer ended; so does its last piece) ends the watch
    and frees the slot."""

    def __init__(self, chunks: Iterable[bytes], transfer: _Transfer, end: Callable[[], None]):
        self.chunks, self.transfer, self.end = chunks, transfer, end
        self.ended = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.chunks:
                for start in range(0, len(chunk), PIECE):
                    if self.transfer.cut:
                        return
                    piece = chunk[start : start + PIECE]
                    yield piece
                    self.transfer.sent += len(piece)
        finally:
            self.close()  # at the end, the slot is free (a server that stops early calls close itself)

    def close(self) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            close = getattr(self.chunks, "close", None)
            if close is not None:
                close()
        finally:
            self.end()
