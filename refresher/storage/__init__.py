"""Where a job's files live: sources, outputs and thumbnails.

One interface, two implementations, chosen by STORAGE_URL:

* unset: `LocalStorage`, the files under DATA_DIR (one machine, or hosts that
  share a disk);
* `s3://bucket/prefix`: `ObjectStorage`, S3-compatible object storage through
  boto3, for hosts that share no disk or lose theirs at every restart. The
  local disk is then scratch only: a source fetched once per host for its
  encodes, and outputs being encoded.

Every file has a key, the same in both: `jobs/<job id>/<file>` (what the
database keeps as `upload_path`, `output_path` and `thumbnail_path`), so
every file of a job sits under a prefix that names it. Nothing outside this
package knows which implementation is in use.

A partial output — ffmpeg still writing, or stopped — lives only on the
encoding host's disk (`work_path`), and reaches storage only through `put`
once ffmpeg finished on its own.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..settings import parse_storage_url

CHUNK_BYTES = 1024 * 1024  # what a download or a ZIP reads at a time


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def source_key(job_id: str, file_id: str) -> str:
    return f"{job_prefix(job_id)}source_{file_id}"


def job_of(key: str) -> str | None:
    """The job id of a key under jobs/, else None."""
    parts = key.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == "jobs" and parts[1] else None


@dataclass(frozen=True)
class FileOnDisk:
    """Where a stored file can be read on this host, to be sent as it is."""

    path: Path


@dataclass(frozen=True)
class FileAtURL:
    """A link that gives the file to whoever holds it, for `expires_in`
    seconds (a presigned URL of the bucket, with the type and name baked in)."""

    url: str
    expires_in: int


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    modified: float  # Unix seconds


class Storage(Protocol):
    """What the service does with stored files."""

    def put(self, key: str, local: Path) -> int:
        """Store the finished local file `local` under `key` (it is moved or
        uploaded, then gone from where it was); its size."""

    def copy(self, source: str, target: str) -> None:
        """A second key with the same content (a rerun's sources)."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """Bytes stored under `key`, None if nothing is."""

    def chunks(self, key: str) -> Iterator[bytes]:
        """The content, read as it is sent (opened on the first chunk)."""

    def locate(
        self, key: str, *, mimetype: str, download_name: str | None = None, as_attachment: bool = False
    ) -> FileOnDisk | FileAtURL | None:
        """Where a client can get the file from (the HTTP layer sends it, or
        sends the client there), or None if it is gone."""

    def file_origin(self) -> str | None:
        """The origin of the links `locate` gives, when it is not this
        service's (pages must be allowed to show images and videos from it)."""

    def local_copy(self, key: str) -> Path:
        """A path on this host's disk to read the content from (for ffmpeg):
        the file itself, or a copy fetched once per host into scratch."""

    def work_path(self, key: str) -> Path:
        """Where this host writes the content of `key` while it is made
        (a partial output): on local disk, never visible under `key`."""

    def release_job(self, job_id: str) -> None:
        """This host is done with the job for now: drop its scratch copies."""

    def held_jobs(self) -> set[str]:
        """The jobs this host holds scratch copies of."""

    def release_all(self) -> None:
        """At a start: drop this host's scratch (nothing runs yet)."""

    def delete_job(self, job_id: str) -> None:
        """Every stored file of the job."""

    def delete(self, keys: list[str]) -> None: ...

    def files(self, prefix: str = "jobs/") -> Iterator[StoredFile]:
        """Every stored file under the prefix, partial outputs included where
        they live in storage (on a shared disk)."""

    def used_bytes(self) -> int:
        """What the stored files take, as STORAGE_LIMIT_MB counts it."""

    def freed_by_deleting(self, job_id: str) -> int:
        """What deleting the job's files gives back."""

    def usage(self, job_ids: list[str]) -> tuple[int, dict[str, int]]:
        """`used_bytes`, and `freed_by_deleting` of every job given, in one
        pass over the storage."""

    def free_bytes(self) -> int | None:
        """Room left where the files live; None when the service cannot tell
        (object storage: STORAGE_LIMIT_MB is the only bound)."""

    def too_full(self) -> bool:
        """The disk holding the files is over 85 % full."""

    def check(self) -> None:
        """Raise StorageError naming the problem if the storage cannot be used."""


class StorageError(RuntimeError):
    """The storage cannot be reached or used; the message says why."""


@functools.lru_cache(maxsize=16)
def open_storage(data_dir: Path, storage_url: str | None, host_id: str = "local") -> Storage:
    """The storage the settings name (one per process and settings: an
    object storage client takes a while to make)."""
    if not storage_url:
        from .local import LocalStorage

        return LocalStorage(Path(data_dir))
    from .objects import ObjectStorage

    bucket, prefix = parse_storage_url(storage_url)
    return ObjectStorage(bucket, prefix, scratch=Path(data_dir) / "scratch" / _safe(host_id))


def for_settings(settings) -> Storage:
    return open_storage(settings.data_dir, settings.storage_url, settings.host_id)


def _safe(name: str) -> str:
    """A host id as one folder name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "host"
    return cleaned[:100]
