"""Where the bytes of a resumable upload (`refresher.resumable`) gather while
they arrive, PATCH by PATCH, and where the finished file then is (the
receiver's `data_key`).

* On DATA_DIR (`DiskReceiver`): one file, `uploads/<id>/data`, written at
  each PATCH's offset; a job made from it takes a hard link.
* In object storage (`BucketReceiver`): an S3 multipart upload whose parts
  are the PATCHes' bytes, cut into parts of the 5 MB minimum S3 allows; what
  is left over at the end of a PATCH waits in the bucket (`uploads/<id>/tail`)
  for the next one. So any web process can take the next PATCH, and a web
  process that restarts loses at most the bytes of the PATCH in flight that
  were not yet in a stored part. The object's key is that of a job's source,
  `jobs/<id>/source_<id>`: the job made from the upload takes its id and
  the object as it is (a copy of a 500 MB object costs seconds). While every
  PATCH of an upload reaches one host, that host keeps a copy in its scratch
  folder too, to check the finished file without fetching it back.

The upload's row records how far it got (`received`, and in the bucket the
parts and the tail's size): `append` reports each step through `record`
only once the bytes it counts are stored, so the row never promises bytes
that are not there. Upload ids are the service's own (checked against the
store before they reach here): no name a client chose becomes a path or key.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from . import Storage, job_of, job_prefix, source_key
from .local import LocalStorage

if TYPE_CHECKING:  # boto3 is loaded only where a bucket is used (receiver_for)
    from .objects import ObjectStorage

RECORD_EVERY_BYTES = 8 * 1024 * 1024  # a long PATCH records its progress this often (on disk)
PART_BYTES = 5 * 1024 * 1024  # S3's smallest part (but the last)
PARTS_IN_FLIGHT = 4  # parts a PATCH sends at once (as boto3 sends a file's: TransferConfig's max_concurrency)
PREFIX = "uploads/"
MIRRORS = "receiving"  # under a host's scratch folder (object storage)


def upload_of(key: str) -> str | None:
    parts = key.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == PREFIX.rstrip("/") and parts[1] else None


class Receiver(Protocol):
    adopts: bool  # the finished file is the source of a job with the upload's id as it is

    @property
    def storage(self) -> Storage:
        """Where the finished file is stored."""

    def data_key(self, upload_id: str) -> str:
        """Its key there."""

    def thumbnail_key(self, upload_id: str) -> str:
        """Where the finished file's thumbnail is stored."""

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
        """The path `finished` gave is read: drop it if it was a copy. Once
        this returns, the file is under `data_key`."""

    def discard(self, upload_id: str, row: dict | None = None) -> None:
        """Every byte of the upload, wherever it is; but when the row says a
        job with the upload's id took the file (`adopts`), the job's files stay."""

    def stored(self) -> Iterator[tuple[str, float]]:
        """(upload id, last change) of every upload that has bytes here."""


class DiskReceiver:
    """One file under DATA_DIR/uploads/<id>/, written at each PATCH's offset;
    a job made from it takes a hard link (`LocalStorage.copy`)."""

    adopts = False

    def __init__(self, storage: Storage, data_dir: Path):
        self.storage = storage
        self.root = Path(data_dir) / PREFIX.rstrip("/")

    def data_key(self, upload_id: str) -> str:
        return f"{PREFIX}{upload_id}/data"

    def thumbnail_key(self, upload_id: str) -> str:
        return f"{PREFIX}{upload_id}/thumbnail.webp"

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


class _Slice(io.RawIOBase):
    """Bytes `start` to `start + length` of a file on disk, read as they are
    sent: a part's body (botocore reads it to sign it, then to send it)."""

    def __init__(self, path: Path, start: int, length: int):
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 (closed with the slice)
        self._start, self._length, self._at = start, length, 0
        self._file.seek(start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self._length

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._length}[whence]
        self._at = min(max(base + offset, 0), self._length)
        self._file.seek(self._start + self._at)
        return self._at

    def read(self, size: int | None = -1) -> bytes:
        left = self._length - self._at
        size = left if size is None or size < 0 or size > left else size
        data = self._file.read(size)
        self._at += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        self._file.close()
        super().close()


class _Spool:
    """Where a PATCH's bytes wait on this host's disk until they are in a
    part or the tail: the parts are sent from here, so a PATCH holds no part
    in memory however many are in flight.

    While every PATCH of an upload comes to this host, the spool is the
    host's whole copy of it (`whole`), kept between PATCHes: the finished
    file is then checked from it without being fetched back, and the tail's
    bytes are in it already. Otherwise it begins where the upload's parts
    end (`base`) with the tail fetched from the bucket, and goes when the
    PATCH ends."""

    STALE_SECONDS = 3600  # copies untouched this long are removed (their upload went elsewhere, or stopped)

    def __init__(self, path: Path, base: int, whole: bool):
        self.path, self.base, self.whole = path, base, whole
        self.file = open(path, "r+b" if whole else "w+b")  # noqa: SIM115 (closed by `close`)
        self.end = base  # the upload's offset up to which the spool holds its bytes

    @classmethod
    def open(cls, copy: Path, received: int, stored: int, fetch_tail: Callable[[], bytes]) -> _Spool:
        copy.parent.mkdir(parents=True, exist_ok=True)
        try:
            whole = received == 0 or copy.stat().st_size == received
        except FileNotFoundError:
            whole = False
        if whole:
            if received == 0:
                copy.write_bytes(b"")
            spool = cls(copy, 0, True)
            spool.file.seek(received)
            spool.end = received
            return spool
        copy.unlink(missing_ok=True)  # it fell behind: a PATCH went to another host
        path = Path(tempfile.mkstemp(prefix=copy.name + ".", suffix=".patch", dir=copy.parent)[1])
        spool = cls(path, stored, False)
        if received > stored:
            spool.write(fetch_tail()[: received - stored])
        return spool

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:  # a disk filling up may take part of a write
            view = view[self.file.write(view) :]
        self.end += len(chunk)

    def slice(self, start: int, end: int) -> _Slice:
        """The upload's bytes from `start` to `end` (offsets in the upload)."""
        self.file.flush()
        return _Slice(self.path, start - self.base, end - start)

    def close(self, stored: int) -> None:
        """The PATCH is over and the upload holds `stored` bytes: the whole
        copy keeps as many, a spool of one PATCH goes."""
        try:
            if self.whole and stored >= self.base:
                self.file.truncate(stored)
            self.file.close()
        except OSError:
            self.whole = False
        if not self.whole:
            self.path.unlink(missing_ok=True)

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
    """The parts of an S3 multipart upload, each PART_BYTES (the last may be
    smaller), whose key is the source key of a job with the upload's id: the
    job made from it takes that id and the object as it is, with no copy.

    A PATCH writes its bytes to a spool on this host's disk and sends each
    part from there as soon as the spool holds it, PARTS_IN_FLIGHT at a time
    (as boto3 sends a file's parts), so the bucket takes the bytes while the
    rest arrive, and the PATCH waits only for its last parts. The row counts
    a part once it and every part before it are stored; what is left at the
    end of a PATCH (less than a part) is put as the tail. If a part fails,
    the PATCH ends having stored the parts before it: the client sends the
    rest again from the offset HEAD gives."""

    adopts = True

    def __init__(self, storage: ObjectStorage):
        self.storage = storage
        self._completing: dict[str, Future] = {}

    @property
    def client(self):
        return self.storage.client

    def data_key(self, upload_id: str) -> str:
        return source_key(upload_id, upload_id)

    def thumbnail_key(self, upload_id: str) -> str:
        return f"{job_prefix(upload_id)}thumbnail.webp"

    def _name(self, key: str) -> str:
        return self.storage.name(key)

    def _tail(self, upload_id: str) -> str:
        return f"{PREFIX}{upload_id}/tail"

    def begin(self, upload_id: str, length: int) -> dict:
        _Spool.prune(self.storage.scratch / MIRRORS)
        created = self.client.create_multipart_upload(
            Bucket=self.storage.bucket, Key=self._name(self.data_key(upload_id))
        )
        return {"multipart": created["UploadId"]}

    def append(self, row: dict, chunks: Iterable[bytes], record: Callable[[dict], None]) -> None:
        parts = json.loads(row["parts"])
        spool = _Spool.open(
            self._mirror(row["id"]),
            row["received"],
            sum(part["size"] for part in parts),
            lambda: self._read(self._tail(row["id"])),
        )
        try:
            self._append(row, parts, chunks, record, spool)
        finally:
            spool.close(row["received"])  # (`record` updates the row)

    def _append(
        self, row: dict, parts: list[dict], chunks: Iterable[bytes], record: Callable[[dict], None], spool: _Spool
    ) -> None:
        upload_id = row["id"]
        stored = sum(part["size"] for part in parts)
        cut = stored  # where the next part begins
        in_flight: deque[tuple[int, Future]] = deque()  # (part size, its future), oldest first
        part_failed: BaseException | None = None
        body_failed: BaseException | None = None

        def settle() -> None:
            """Wait for the oldest part in flight; record it once it is stored,
            unless one before it failed."""
            nonlocal stored, part_failed
            size, future = in_flight.popleft()
            if part_failed is not None:
                wait([future])
                return
            try:
                parts.append(future.result())
            except BaseException as exc:
                part_failed = exc
                for _, later in in_flight:
                    later.cancel()
                return
            stored += size
            # the parts now reach past the tail's bytes (a tail is shorter than a part)
            record({"parts": json.dumps(parts), "tail": 0, "received": stored})

        def send(start: int, end: int) -> None:
            number = len(parts) + len(in_flight) + 1
            in_flight.append((end - start, sender.submit(self._put_part, row, number, spool.slice(start, end))))

        with ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="upload-part") as sender:
            try:
                for chunk in chunks:
                    spool.write(chunk)
                    while part_failed is None and spool.end - cut >= PART_BYTES:
                        if len(in_flight) == PARTS_IN_FLIGHT:
                            settle()
                            continue
                        send(cut, cut + PART_BYTES)
                        cut += PART_BYTES
                    if part_failed is not None:
                        break
            except BaseException as exc:  # the body broke off (or the disk is full): keep what arrived
                body_failed = exc
            while in_flight:
                settle()
            if part_failed is not None:
                raise part_failed  # the client sends the rest again, from the parts stored
            left = spool.end - stored
            if stored + left == row["length"] and left:
                send(stored, spool.end)  # the last part may be small
                settle()
                if part_failed is not None:
                    raise part_failed
            elif left != row["tail"] or stored + left != row["received"]:
                with spool.slice(stored, spool.end) as body:
                    self.client.put_object(Bucket=self.storage.bucket, Key=self._name(self._tail(upload_id)), Body=body)
                record({"tail": left, "received": stored + left})
        if body_failed is not None:
            raise body_failed

    def _mirror(self, upload_id: str) -> Path:
        # not where `local_copy` fetches to, which takes any file there for a whole one
        return self.storage.scratch / MIRRORS / upload_id

    def _put_part(self, row: dict, number: int, body: _Slice) -> dict:
        with body:
            answer = self.client.upload_part(
                Bucket=self.storage.bucket,
                Key=self._name(self.data_key(row["id"])),
                UploadId=row["multipart"],
                PartNumber=number,
                Body=body,
            )
            return {"n": number, "etag": answer["ETag"], "size": len(body)}

    def _read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.storage.bucket, Key=self._name(key))["Body"].read()

    def _complete(self, row: dict) -> None:
        """Make the parts one object (once: a second call finds it made)."""
        key = self.data_key(row["id"])
        if self.storage.size(key) is not None:
            return
        parts = json.loads(row["parts"])
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

    def finished(self, row: dict) -> Path:
        """The file, from this host's whole copy when every byte of it came
        through this host (while the bucket joins the parts, which
        `done_reading` waits for); else joined, then fetched once."""
        mirror = self._mirror(row["id"])
        try:
            whole = mirror.stat().st_size == row["length"]
        except FileNotFoundError:
            whole = False
        if not whole:
            self._complete(row)
            return self.storage.local_copy(self.data_key(row["id"]))
        joined: Future = Future()

        def join() -> None:
            try:
                self._complete(row)
            except BaseException as exc:
                joined.set_exception(exc)
            else:
                joined.set_result(None)

        threading.Thread(target=join, name="upload-join", daemon=True).start()
        self._completing[row["id"]] = joined
        return mirror

    def done_reading(self, row: dict, path: Path) -> None:
        """Drop the copy read; once the parts are one object (raises if they could not be joined)."""
        try:
            joined = self._completing.pop(row["id"], None)
            if joined is not None:
                joined.result()
        finally:
            if path == self._mirror(row["id"]):
                path.unlink(missing_ok=True)
            else:
                self.storage.release_job(row["id"])  # what `local_copy` fetched

    def _abort(self, row: dict) -> None:
        if not row.get("multipart"):
            return
        from botocore.exceptions import ClientError

        try:
            self.client.abort_multipart_upload(
                Bucket=self.storage.bucket, Key=self._name(self.data_key(row["id"])), UploadId=row["multipart"]
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchUpload", "404"):
                raise

    def discard(self, upload_id: str, row: dict | None = None) -> None:
        """Without its row: what the row would have told (the joined object,
        if any, is left to the sweep of jobs without a row)."""
        if row is not None:
            self._abort(row)
        else:
            for key, multipart, _ in self.storage.multipart_uploads(self.data_key(upload_id)):
                if key == self.data_key(upload_id):
                    self._abort({"id": upload_id, "multipart": multipart})
        doomed = [f.key for f in self.storage.files(f"{PREFIX}{upload_id}/")]
        if row is not None and row.get("job_id") != upload_id:  # no job took its bytes
            doomed += [self.data_key(upload_id), self.thumbnail_key(upload_id)]
            self.storage.release_job(upload_id)
        self.storage.delete(doomed)
        self._mirror(upload_id).unlink(missing_ok=True)

    def stored(self) -> Iterator[tuple[str, float]]:
        latest: dict[str, float] = {}
        for item in self.storage.files(PREFIX):
            upload_id = upload_of(item.key)
            if upload_id:
                latest[upload_id] = max(latest.get(upload_id, 0), item.modified)
        for key, _, begun in self.storage.multipart_uploads("jobs/"):
            upload_id = job_of(key)
            if upload_id and key == self.data_key(upload_id):
                latest[upload_id] = max(latest.get(upload_id, 0), begun)
        yield from latest.items()


def receiver_for(storage: Storage, data_dir: Path) -> Receiver:
    if isinstance(storage, LocalStorage):
        return DiskReceiver(storage, data_dir)
    from .objects import ObjectStorage

    if isinstance(storage, ObjectStorage):
        return BucketReceiver(storage)
    raise TypeError(f"no place for resumable uploads in {type(storage).__name__}")
