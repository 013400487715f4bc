"""Files in S3-compatible object storage (STORAGE_URL=s3://bucket/prefix).

boto3 takes the endpoint, region and credentials from the standard AWS
variables (AWS_ENDPOINT_URL for a service other than AWS, AWS_REGION,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or any other source boto3 reads).

* Uploads and fetches go through boto3's transfer manager: multipart above
  16 MB, in 8 MB parts, at most 4 at a time, so a transfer holds about 32 MB
  whatever the file's size.
* A rerun's sources, and a resumable upload made into a job, are copied
  inside the bucket (no byte passes through the service), in one request up
  to 5 GB.
* A single output or a thumbnail is a redirect to a presigned URL valid for
  PRESIGNED_SECONDS, carrying the file's type and name, so the bytes (and
  Range requests) go between the client and the bucket directly; a ZIP
  streams the objects through the service.
* Scratch: `<DATA_DIR>/scratch/<HOST_ID>/jobs/<job id>/`, a source fetched
  once per host, partial outputs; dropped when the host is done with the job
  and at every start.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from contextlib import contextmanager

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..names import content_disposition
from . import CHUNK_BYTES, FileAtURL, StorageError, StoredFile, job_of, job_prefix

PRESIGNED_SECONDS = 300
# CopyObject takes objects up to 5 GB in one request; against moto's server a
# 200 MB copy took 4.4 s so, and 19.5 s as parts of 8 MB (UploadPartCopy)
SINGLE_COPY_BYTES = 5 * 1024**3
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
TRANSFER = TransferConfig(
    multipart_threshold=16 * 1024 * 1024,
    multipart_chunksize=8 * 1024 * 1024,
    max_concurrency=4,
    max_io_queue=16,
    use_threads=True,
)
CLIENT_CONFIG = Config(
    signature_version="s3v4",
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=60,
    max_pool_connections=40,
)


@contextmanager
def _reported(what: str):
    """boto3's errors as StorageError, which the service knows (a missing
    object is not one: the callers that can meet it ask `size`)."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"object storage: {what}: {exc}") from exc


class ObjectStorage:
    def __init__(self, bucket: str, prefix: str, scratch: Path):
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.scratch = Path(scratch)
        self._client = None
        self._client_pid: int | None = None
        self._origin: str | None = None
        self._lock = threading.Lock()

    @property
    def client(self):
        """One client per process (clients are thread-safe, not fork-safe)."""
        if self._client is None or self._client_pid != os.getpid():
            with self._lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = boto3.session.Session().client("s3", config=CLIENT_CONFIG)
                    self._client_pid = os.getpid()
        return self._client

    def name(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"not a storage key: {key!r}")
        return self.prefix + key

    # --- writing ----------------------------------------------------------------------------
    def put(self, key: str, local: Path) -> int:
        size = os.stat(local).st_size
        with _reported(f"storing {key}"):
            self.client.upload_file(str(local), self.bucket, self.name(key), Config=TRANSFER)
        Path(local).unlink(missing_ok=True)
        return size

    def copy(self, source: str, target: str) -> None:
        """One CopyObject up to its 5 GB limit (the bucket copies it in one
        go); in parts above it."""
        copied = {"Bucket": self.bucket, "Key": self.name(source)}
        size = self.size(source)
        with _reported(f"copying {source}"):
            if size is not None and size <= SINGLE_COPY_BYTES:
                self.client.copy_object(Bucket=self.bucket, Key=self.name(target), CopySource=copied)
            else:
                self.client.copy(copied, self.bucket, self.name(target), Config=TRANSFER)

    # --- reading -------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.name(key))["ContentLength"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"object storage: reading {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"object storage: reading {key}: {exc}") from exc

    def chunks(self, key: str) -> Iterator[bytes]:
        with _reported(f"reading {key}"):
            body = self.client.get_object(Bucket=self.bucket, Key=self.name(key))["Body"]
            try:
                yield from body.iter_chunks(CHUNK_BYTES)
            finally:
                body.close()

    def locate(
        self, key: str, *, mimetype: str, download_name: str | None = None, as_attachment: bool = False
    ) -> FileAtURL:
        params = {"Bucket": self.bucket, "Key": self.name(key), "ResponseContentType": mimetype}
        if download_name or as_attachment:
            disposition = "attachment" if as_attachment else "inline"
            params["ResponseContentDisposition"] = content_disposition(download_name, disposition)
        url = self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGNED_SECONDS)
        return FileAtURL(url, PRESIGNED_SECONDS)

    def file_origin(self) -> str | None:
        """Where presigned links point (signing is local: no request is made)."""
        if self._origin is None:
            parts = urlsplit(
                self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": self.name("jobs/x")}, ExpiresIn=60
                )
            )
            self._origin = f"{parts.scheme}://{parts.netloc}"
        return self._origin

    def local_copy(self, key: str) -> Path:
        """The object fetched into this host's scratch, once: the first
        process to want it fetches it while the others wait on its lock."""
        target = self.scratch / key
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_name(target.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not target.is_file():
                partial = target.with_name(f"{target.name}.fetch-{secrets.token_hex(4)}")
                try:
                    with _reported(f"fetching {key}"):
                        self.client.download_file(self.bucket, self.name(key), str(partial), Config=TRANSFER)
                    os.replace(partial, target)
                finally:
                    partial.unlink(missing_ok=True)
        return target

    def work_path(self, key: str) -> Path:
        final = self.scratch / key
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(final.stem + ".part" + final.suffix)

    def release_job(self, job_id: str) -> None:
        shutil.rmtree(self.scratch / job_prefix(job_id), ignore_errors=True)

    def held_jobs(self) -> set[str]:
        try:
            return {entry.name for entry in (self.scratch / "jobs").iterdir() if entry.is_dir()}
        except FileNotFoundError:
            return set()

    def release_all(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    # --- deleting ------------------------------------------------------------------------------------
    def delete_job(self, job_id: str) -> None:
        self.delete([f.key for f in self.files(job_prefix(job_id))])

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": self.name(key)} for key in keys[start : start + DELETE_BATCH]]
            with _reported("deleting"):
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    # --- counting -------------------------------------------------------------------------------------
    def files(self, prefix: str = "jobs/") -> Iterator[StoredFile]:
        with _reported(f"listing {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.name(prefix))
            for page in pages:
                for item in page.get("Contents", []):
                    yield StoredFile(item["Key"][len(self.prefix) :], item["Size"], item["LastModified"].timestamp())

    def multipart_uploads(self, prefix: str) -> Iterator[tuple[str, str, float]]:
        """(key, multipart upload id, when begun) of each unfinished multipart upload under the prefix."""
        with _reported(f"listing the uploads under {prefix}"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.name(prefix)
            )
            for page in pages:
                for item in page.get("Uploads", []):
                    yield item["Key"][len(self.prefix) :], item["UploadId"], item["Initiated"].timestamp()

    def _parts_bytes(self) -> int:
        """What the parts of resumable uploads' unfinished multipart uploads
        take (no listing of objects shows them)."""
        total = 0
        for key, multipart, _ in self.multipart_uploads(""):
            with _reported(f"listing the parts of {key}"):
                pages = self.client.get_paginator("list_parts").paginate(
                    Bucket=self.bucket, Key=self.name(key), UploadId=multipart
                )
                total += sum(part["Size"] for page in pages for part in page.get("Parts", []))
        return total

    def used_bytes(self) -> int:
        return self.usage([])[0]

    def freed_by_deleting(self, job_id: str) -> int:
        return sum(f.size for f in self.files(job_prefix(job_id)))

    def usage(self, job_ids: list[str]) -> tuple[int, dict[str, int]]:
        # one listing of the jobs' files and the resumable uploads' objects
        used, sizes = self._parts_bytes(), dict.fromkeys(job_ids, 0)
        for item in self.files(""):
            if not item.key.startswith(("jobs/", "uploads/")):
                continue
            used += item.size
            job_id = job_of(item.key)
            if job_id in sizes:
                sizes[job_id] += item.size
        return used, sizes

    def free_bytes(self) -> int | None:
        return None

    def too_full(self) -> bool:
        return False

    def check(self) -> None:
        """The bucket answers, with these credentials."""
        where = f"s3://{self.bucket}/{self.prefix}"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(f"STORAGE_URL {where}: there is no bucket {self.bucket!r}") from None
            if code in ("403", "AccessDenied", "Forbidden"):
                raise StorageError(
                    f"STORAGE_URL {where}: access denied; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ) from None
            raise StorageError(f"STORAGE_URL {where}: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"STORAGE_URL {where}: {exc}") from None
