"""Files under DATA_DIR: the default, for one machine or hosts sharing a disk."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from . import CHUNK_BYTES, FileOnDisk, StorageError, StoredFile, job_prefix

DISK_FULL_FRACTION = 0.85


class LocalStorage:
    def __init__(self, data_dir: Path):
        self.root = Path(data_dir)

    def path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"not a storage key: {key!r}")
        return self.root / key

    # --- writing ----------------------------------------------------------------------------
    def put(self, key: str, local: Path) -> int:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, target)
        return target.stat().st_size

    def copy(self, source: str, target: str) -> None:
        """A hard link when the file system allows one (no second copy on
        disk), else a copy."""
        src, dst = self.path(source), self.path(target)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)

    # --- reading -------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def chunks(self, key: str) -> Iterator[bytes]:
        with open(self.path(key), "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk

    def locate(
        self, key: str, *, mimetype: str, download_name: str | None = None, as_attachment: bool = False
    ) -> FileOnDisk | None:
        path = self.path(key)
        return FileOnDisk(path) if path.is_file() else None

    def file_origin(self) -> str | None:
        return None

    def local_copy(self, key: str) -> Path:
        return self.path(key)

    def work_path(self, key: str) -> Path:
        final = self.path(key)
        return final.with_name(final.stem + ".part" + final.suffix)

    def release_job(self, job_id: str) -> None:
        """Nothing is copied to scratch: the files are read where they are."""

    def held_jobs(self) -> set[str]:
        return set()

    def release_all(self) -> None:
        pass

    # --- deleting ------------------------------------------------------------------------------------
    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.path(job_prefix(job_id)), ignore_errors=True)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.path(key).unlink(missing_ok=True)

    # --- counting -------------------------------------------------------------------------------------
    def files(self, prefix: str = "jobs/") -> Iterator[StoredFile]:
        base = self.path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        for root, _dirs, names in os.walk(base):
            for name in names:
                full = os.path.join(root, name)
                try:
                    info = os.lstat(full)
                except FileNotFoundError:
                    continue
                yield StoredFile(Path(full).relative_to(self.root).as_posix(), info.st_size, info.st_mtime)

    def used_bytes(self) -> int:
        """What the jobs' files and the uploads being received (resumable
        ones included) take, as STORAGE_LIMIT_MB counts it. Not the database, whose write-ahead log
        grows and shrinks by megabytes as it is checkpointed: counted, it
        made the same job fit at upload and not at its start (and with
        object storage, the bucket holds no database either)."""
        return tree_size(self.root / "jobs") + tree_size(self.root / "incoming") + tree_size(self.root / "uploads")

    def freed_by_deleting(self, job_id: str) -> int:
        return unshared_size(self.path(job_prefix(job_id)))

    def usage(self, job_ids: list[str]) -> tuple[int, dict[str, int]]:
        return self.used_bytes(), {job_id: self.freed_by_deleting(job_id) for job_id in job_ids}

    def free_bytes(self) -> int | None:
        return shutil.disk_usage(self.root).free

    def too_full(self) -> bool:
        usage = shutil.disk_usage(self.root)
        return usage.used / usage.total > DISK_FULL_FRACTION

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"DATA_DIR {self.root} is not writable")


def tree_size(path: Path) -> int:
    """Bytes on disk under `path`; a file hard-linked twice (the sources of a
    rerun) counts once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for info in _stats(path):
        if info.st_nlink > 1:
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
        total += info.st_size
    return total


def unshared_size(path: Path) -> int:
    """What deleting `path` gives back: files linked from elsewhere too (a
    rerun's sources) stay on disk."""
    return sum(info.st_size for info in _stats(path) if info.st_nlink == 1)


def _stats(path: Path):
    """os.lstat of every file under `path` (one deleted meanwhile is skipped)."""
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                yield os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
