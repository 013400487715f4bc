"""Where uploads land while their request is read: DATA_DIR/incoming/<random>/,
one folder per request that carries files.

Each folder is held with an flock for as long as its request lives, and the
lock goes with the process that holds it: a worker that is killed, or a
server stopped in the middle of an upload, holds nothing any more. So a
server that starts (and the cleanup daemon) removes exactly the folders
nobody holds, at once, and never one that another live server on the same
DATA_DIR is still receiving.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
from pathlib import Path


def incoming_dir(data_dir: Path) -> Path:
    return data_dir / "incoming"


class SpoolFolder:
    """One request's folder, held until `remove`."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd

    def remove(self) -> None:
        """Delete the folder, then let go of it."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def create(data_dir: Path) -> SpoolFolder:
    """A new folder under DATA_DIR/incoming, held by this request."""
    incoming = incoming_dir(data_dir)
    incoming.mkdir(parents=True, exist_ok=True)
    while True:
        path = incoming / secrets.token_hex(8)
        path.mkdir()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        # Between mkdir and this lock a starting server may have taken the
        # folder for abandoned and removed it: then it is gone, make another.
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return SpoolFolder(path, fd)
        except FileNotFoundError:
            pass
        os.close(fd)


def remove_abandoned(data_dir: Path) -> list[Path]:
    """Remove every upload folder (or stray file) under DATA_DIR/incoming
    that no live request holds; what was removed."""
    incoming = incoming_dir(data_dir)
    if not incoming.is_dir():
        return []
    removed = []
    for entry in incoming.iterdir():
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone already, or a symbolic link: nothing of ours
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # being received
        try:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        finally:
            os.close(fd)
    return removed
