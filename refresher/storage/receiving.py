"""Where the bytes of a resumable upload (`refresher.resumable`) gather while
they arrive, PATCH by PATCH, and where the finished file then is: under the
key `uploads/<upload id>/data` of the storage in use.

* On DATA_DIR (`DiskReceiver`): one file, written at each PATCH's offset.
* In object storage (`BucketReceiver`): an S3 multipart upload whose parts
  are the PATCHes' bytes, cut into parts of the 5 MB minimum S3 allows; what
  is left over at the end of a PATCH waits in the bucket (`uploads/<id>/tail`)
  for the next one. So any web process can take the next PATCH, and a web
  process that restarts loses at most the bytes of the PATCH in flight that
  had not yet filled a part. While every PATCH of an upload reaches one host,
  that host keeps a copy in its scratch folder too, to check the finished
  file without fetching it back.

The upload's row records how far it got (`received`, and in the bucket the
parts and the tail's size): `append` reports each step through `record`
only once the bytes it counts are stored, so the row never promises bytes
that are not there. Upload ids are the service's own (checked against the
store before they reach here): no name a client chose becomes a path or key.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from botocore.exceptions import ClientError

from . import Storage
from .local import LocalStorage
from .objects import ObjectStorage

RECORD_EVERY_BYTES = 8 * 1024 * 1024  # a long PATCH records its progress this often (on disk)
PART_BYTES = 5 * 1024 * 1024  # S3's smallest part (but the last)
PREFIX = "uploads/"
MIRRORS = "receiving"  # under a host's scratch folder (object storage)


def data_key(upload_id: str) -> str:
    return f"{PREFIX}{upload_id}/data"


def thumbnail_key(upload_id: str) -> str:
    return f"{PREFIX}{upload_id}/thumbnail.webp"


def upload_of(key: str) -> str | None:
    parts = key.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == PREFIX.rstrip("/") and parts[1] else None


class Receiver(Protocol):
    def begin(self, upload_id: str, length: int) -> dict:
        """Make room for a new upload; fields for its row."""

    def append(self, row: dict, chunks: Iterable[bytes], record: Callable[[dict], None]) -> None:
        """Store `chunks` from the upload's offset on; `record(fields)` each
        time more of them is stored, and once more at the end, also when
        reading `chunks` fails (the exception is then raised on)."""

    def finished(self, row: dict) -> Path:
        """The upload has all its bytes: make it one file under `data_key`,
        and give a path on this host to read it from (for the probe)."""

    def done_reading(self, row: dict, path: Path) -> None:
        """The path `finished` gave is read: drop it if it was a copy."""

    def discard(self, upload_id: str, row: dict | None = None) -> None:
        """Every byte of the upload, wherever it is."""

    def stored(self) -> Iterator[tuple[str, float]]:
        """(upload id, last change) of every upload that has bytes here."""


class DiskReceiver:
    def __init__(self, storage: Storage, data_dir: Path):
        self.storage = storage
        self.root = Path(data_dir) / PREFIX.rstrip("/")

    def path(self, upload_id: str) -> Path:
        return self.root / upload_id / "data"

    def begin(self, upload_id: str, length: int) -> dict:
        path = self.path(upload_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return {}

    def append(self, row: dict, chunks: Iterable[bytes], record: Callable[[dict], None]) -> None:
        received = row["received"]
        recorded = received
        with open(self.path(row["id"]), "r+b", buffering=0) as f:
            f.seek(received)
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:  # a disk filling up may take part of a write
                        view = view[f.write(view) :]
                    received += len(chunk)
                    if received - recorded >= RECORD_EVERY_BYTES:
                        recorded = received
                        record({"received": received})
            finally:
                f.truncate(received)  # what an earlier PATCH cut off past its record is not kept
                record({"received": received})

    def finished(self, row: dict) -> Path:
        return self.path(row["id"])

    def done_reading(self, row: dict, path: Path) -> None:
        pass

    def discard(self, upload_id: str, row: dict | None = None) -> None:
        shutil.rmtree(self.root / upload_id, ignore_errors=True)

    def stored(self) -> Iterator[tuple[str, float]]:
        try:
            entries = list(self.root.iterdir())
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                yield entry.name, max([entry.stat().st_mtime] + [child.stat().st_mtime for child in entry.iterdir()])
            except FileNotFoundError:
                continue


class _Mirror:
    """This host's copy of the bytes of an upload in the bucket, kept while
    every PATCH of it comes here, so that the finished file need not be
    fetched back for its check. Only a help: a mirror that fell behind (a
    PATCH went to another host) is dropped, and any error drops it too."""

    STALE_SECONDS = 3600  # mirrors untouched this long are removed (their upload went elsewhere, or stopped)

    def __init__(self, path: Path, file=None):
        self.path = path
        self.file = file

    @classmethod
    def open(cls, path: Path, offset: int) -> _Mirror:
        try:
            if offset == 0 or (path.is_file() and path.stat().st_size == offset):
                path.parent.mkdir(parents=True, exist_ok=True)
                file = open(path, "r+b" if offset else "wb")
                file.seek(offset)
                return cls(path, file)
        except OSError:
            pass
        path.unlink(missing_ok=True)
        return cls(path)

    def write(self, chunk: bytes) -> None:
        if self.file is None:
            return
        try:
            self.file.write(chunk)
        except OSError:
            self.file.close()
            self.file = None
            self.path.unlink(missing_ok=True)

    def close(self, stored: int) -> None:
        """Keep as much as the bucket holds."""
        if self.file is None:
            return
        try:
            self.file.truncate(stored)
            self.file.close()
        except OSError:
            self.path.unlink(missing_ok=True)
        self.file = None

    @classmethod
    def prune(cls, folder: Path) -> None:
        try:
            entries = list(folder.iterdir())
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                if time.time() - entry.stat().st_mtime > cls.STALE_SECONDS:
                    entry.unlink()
            except (FileNotFoundError, IsADirectoryError):
                continue


class BucketReceiver:
    """The parts of an S3 multipart upload. Each is PART_BYTES (the last may
    be smaller). A part goes to the bucket on a thread of its own while the
    PATCH reads the next one, one part in flight at a time: a PATCH holds at
    most two parts' bytes in memory, and waits only for its last part. The
    row counts a part once the bucket has it; a part that fails leaves its
    bytes to the tail, with those read after it."""

    def __init__(self, storage: ObjectStorage):
        self.storage = storage

    @property
    def client(self):
        return self.storage.client

    def _name(self, key: str) -> str:
        return self.storage.name(key)

    def _tail(self, upload_id: str) -> str:
        return f"{PREFIX}{upload_id}/tail"

    def begin(self, upload_id: str, length: int) -> dict:
        _Mirror.prune(self.storage.scratch / MIRRORS)
        created = self.client.create_multipart_upload(Bucket=self.storage.bucket, Key=self._name(data_key(upload_id)))
        return {"multipart": created["UploadId"]}

    def append(self, row: dict, chunks: Iterable[bytes], record: Callable[[dict], None]) -> None:
        mirror = _Mirror.open(self._mirror(row["id"]), row["received"])
        try:
            self._append(row, chunks, record, mirror)
        finally:
            mirror.close(row["received"])  # (`record` updates the row)

    def _append(self, row: dict, chunks: Iterable[bytes], record: Callable[[dict], None], mirror: _Mirror) -> None:
        upload_id = row["id"]
        parts = json.loads(row["parts"])
        stored = sum(part["size"] for part in parts)
        buffer = bytearray()
        if row["tail"]:
            buffer += self._read(self._tail(upload_id))[: row["tail"]]
        # The bytes not yet in a part: those of the part in flight (`sending`),
        # then `buffer`. The row's tail is the first `tail_stored` of them.
        tail_stored = len(buffer)
        sending: tuple[Future, bytes] | None = None
        failed: BaseException | None = None

        def settle() -> None:
            """Wait for the part in flight; once it is stored, record it."""
            nonlocal sending, stored, tail_stored, buffer
            if sending is None:
                return
            future, body = sending
            sending = None
            try:
                parts.append(future.result())
            except BaseException:
                buffer = bytearray(body) + buffer  # its bytes are not stored: they go back in front
                raise
            stored += len(body)
            tail_stored = 0  # what the tail held is in a part now
            record({"parts": json.dumps(parts), "tail": 0, "received": stored})

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-part") as sender:
            try:
                for chunk in chunks:
                    buffer += chunk
                    mirror.write(chunk)
                    while len(buffer) >= PART_BYTES:
                        settle()  # one part in flight at a time: at most two parts' bytes held
                        part = bytes(memoryview(buffer)[:PART_BYTES])
                        del buffer[:PART_BYTES]
                        sending = (sender.submit(self._put_part, row, len(parts) + 1, part), part)
                        del part  # (else the next part is made while this one is still held here)
            finally:
                try:
                    settle()
                except Exception as exc:  # keep what arrived as the tail, then say the part failed
                    failed = exc
                if stored + len(buffer) == row["length"] and buffer and failed is None:
                    parts.append(self._put_part(row, len(parts) + 1, bytes(buffer)))  # the last may be small
                    stored += len(buffer)
                    record({"parts": json.dumps(parts), "tail": 0, "received": stored})
                elif len(buffer) != tail_stored:
                    self.client.put_object(
                        Bucket=self.storage.bucket, Key=self._name(self._tail(upload_id)), Body=bytes(buffer)
                    )
                    record({"tail": len(buffer), "received": stored + len(buffer)})
                else:
                    record({"received": stored + len(buffer)})
        if failed is not None:
            raise failed

    def _mirror(self, upload_id: str) -> Path:
        # not where `local_copy` fetches to, which takes any file there for a whole one
        return self.storage.scratch / MIRRORS / upload_id

    def _put_part(self, row: dict, number: int, body: bytes) -> dict:
        answer = self.client.upload_part(
            Bucket=self.storage.bucket,
            Key=self._name(data_key(row["id"])),
            UploadId=row["multipart"],
            PartNumber=number,
            Body=body,
        )
        return {"n": number, "etag": answer["ETag"], "size": len(body)}

    def _read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.storage.bucket, Key=self._name(key))["Body"].read()

    def finished(self, row: dict) -> Path:
        """The file, from this host's mirror when every byte of it came
        through this host; else fetched from the bucket once."""
        parts = json.loads(row["parts"])
        key = data_key(row["id"])
        if self.storage.size(key) is None:
            if parts:
                self.client.complete_multipart_upload(
                    Bucket=self.storage.bucket,
                    Key=self._name(key),
                    UploadId=row["multipart"],
                    MultipartUpload={"Parts": [{"PartNumber": p["n"], "ETag": p["etag"]} for p in parts]},
                )
            else:  # nothing to make parts of: an empty file
                self._abort(row)
                self.client.put_object(Bucket=self.storage.bucket, Key=self._name(key), Body=b"")
            self.storage.delete([self._tail(row["id"])])
        mirror = self._mirror(row["id"])
        try:
            if mirror.stat().st_size == row["length"]:
                return mirror
        except FileNotFoundError:
            pass
        return self.storage.local_copy(key)

    def done_reading(self, row: dict, path: Path) -> None:
        shutil.rmtree(self.storage.scratch / PREFIX / row["id"], ignore_errors=True)
        self._mirror(row["id"]).unlink(missing_ok=True)

    def _abort(self, row: dict) -> None:
        if not row.get("multipart"):
            return
        try:
            self.client.abort_multipart_upload(
                Bucket=self.storage.bucket, Key=self._name(data_key(row["id"])), UploadId=row["multipart"]
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchUpload", "404"):
                raise

    def discard(self, upload_id: str, row: dict | None = None) -> None:
        if row is not None:
            self._abort(row)
        else:
            for key, multipart, _ in self.storage.multipart_uploads(PREFIX):
                if upload_of(key) == upload_id:
                    self._abort({"id": upload_id, "multipart": multipart})
        self.storage.delete([f.key for f in self.storage.files(f"{PREFIX}{upload_id}/")])
        shutil.rmtree(self.storage.scratch / PREFIX / upload_id, ignore_errors=True)
        self._mirror(upload_id).unlink(missing_ok=True)

    def stored(self) -> Iterator[tuple[str, float]]:
        latest: dict[str, float] = {}
        for item in self.storage.files(PREFIX):
            upload_id = upload_of(item.key)
            if upload_id:
                latest[upload_id] = max(latest.get(upload_id, 0), item.modified)
        for key, _, begun in self.storage.multipart_uploads(PREFIX):
            upload_id = upload_of(key)
            if upload_id:
                latest[upload_id] = max(latest.get(upload_id, 0), begun)
        yield from latest.items()


def receiver_for(storage: Storage, data_dir: Path) -> Receiver:
    if isinstance(storage, LocalStorage):
        return DiskReceiver(storage, data_dir)
    if isinstance(storage, ObjectStorage):
        return BucketReceiver(storage)
    raise TypeError(f"no place for resumable uploads in {type(storage).__name__}")
