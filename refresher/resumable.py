"""Resumable uploads: the tus 1.0 protocol (tus.io), with its `creation`,
`creation-with-upload`, `termination` and `expiration` extensions, apart
from HTTP (`api/resumable.py` speaks it).

An upload is a row (`store/uploads.py`: its length, how far it got, who is
receiving it) and its bytes (`storage/receiving.py`: a file under DATA_DIR,
or an S3 multipart upload). A PATCH appends under a hold on the row, so two
requests never write one upload at once, whichever web process they reach.
When the last byte is in, the file is checked as an uploaded video is
(`intake.check_video`: the same limits and messages, with its file name) and
its thumbnail made, so that a job made from it (`make_job`) is answered as
fast as a multipart upload's. An upload makes one job: its bytes become the
job's source, and the row says which job it made until it expires.

Unfinished uploads expire UPLOAD_TTL_HOURS after their last byte arrived;
the cleanup daemon removes them, and bytes that no row owns
(`lifecycle.expire_uploads`, `lifecycle.sweep_temporaries`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path

from . import contract, intake, webhooks
from .errors import Rejected
from .media import ffmpeg
from .media.slots import ProbeSlots
from .names import display_name
from .settings import Settings
from .storage import Storage, StorageError
from .storage.receiving import Receiver, receiver_for
from .store import Store, UploadClaimed, new_id

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "termination", "expiration")
OCTET_STREAM = "application/offset+octet-stream"
READ_BYTES = 256 * 1024  # what a PATCH reads from its body at a time
HOLD_SECONDS = 60.0  # a PATCH's hold lapses this long after its last stored bytes (a host that died)
MAX_METADATA_BYTES = 4096
JOB_FIELDS = ("uploads", "variations", "seed", "name", "webhookUrl")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def receiver(settings: Settings, storage: Storage) -> Receiver:
    return receiver_for(storage, settings.data_dir)


def protocol_headers(settings: Settings) -> dict[str, str]:
    """What OPTIONS says of this server."""
    return {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Max-Size": str(settings.max_upload_bytes),
    }


def expires_header(row: dict) -> str:
    return formatdate(row["expires_at"], usegmt=True)


def is_complete(row: dict) -> bool:
    return row["received"] == row["length"]


# --- creation --------------------------------------------------------------------------------


def parse_length(raw: str | None, settings: Settings) -> int:
    if raw is None:
        raise Rejected(400, "Upload-Length is required: the size of the file in bytes")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
        raise Rejected(400, f"Upload-Length must be a whole number of bytes, got {raw[:30]!r}")
    length = int(raw)
    if length > settings.max_upload_bytes:
        raise Rejected(
            413,
            f"the file is {length} bytes, larger than the limit of {settings.max_upload_mb:g} MB (MAX_UPLOAD_MB)",
        )
    return length


def parse_metadata(raw: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64(value)` pairs."""
    if not raw:
        return {}
    if len(raw) > MAX_METADATA_BYTES:
        raise Rejected(400, f"Upload-Metadata is longer than {MAX_METADATA_BYTES} bytes")
    found = {}
    for pair in raw.split(","):
        key, _, value = pair.strip().partition(" ")
        if not key or " " in value.strip():
            raise Rejected(400, "Upload-Metadata must be comma-separated pairs of a key and a base64 value")
        try:
            found[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8", "replace") if value else ""
        except (binascii.Error, ValueError):
            raise Rejected(400, f"Upload-Metadata: the value of {key[:40]!r} is not base64") from None
    return found


def create(store: Store, settings: Settings, storage: Storage, length: int, metadata_raw: str | None) -> dict:
    """A new, empty upload."""
    metadata = parse_metadata(metadata_raw)
    if length > settings.storage_limit_bytes:
        raise Rejected(
            413,
            f"the file is {length} bytes, more than the storage limit of {settings.storage_limit_mb:g} MB "
            f"(STORAGE_LIMIT_MB)",
        )
    now = time.time()
    upload_id = new_id()
    fields = receiver(settings, storage).begin(upload_id, length)
    row = {
        "id": upload_id,
        "name": display_name(metadata.get("filename") or metadata.get("name")),
        "metadata": metadata_raw or "",
        "length": length,
        "received": 0,
        "created_at": now,
        "expires_at": now + settings.upload_ttl_seconds,
        **fields,
    }
    try:
        store.create_upload(row)
    except BaseException:
        receiver(settings, storage).discard(upload_id, {**row, "parts": "[]", "tail": 0})
        raise
    log.info("upload %s begun: %s, %d bytes", upload_id, row["name"], length)
    return store.get_upload(upload_id) or row


# --- status ----------------------------------------------------------------------------------


def find(store: Store, upload_id: str) -> dict:
    """The upload, if it is one still (404 unknown, 410 expired or made into a job)."""
    row = store.get_upload(upload_id) if _ID.fullmatch(upload_id) else None
    if row is None:
        raise Rejected(404, f"there is no upload {upload_id[: contract.MAX_ID_LENGTH]!r}")
    if row["job_id"] is not None:
        raise Rejected(410, f"upload {upload_id} made job {row['job_id']}; it is no longer an upload")
    if row["expires_at"] <= time.time():
        raise Rejected(410, f"upload {upload_id} expired; start it again")
    return row


# --- receiving -------------------------------------------------------------------------------


class _Hold:
    """This request's hold on an upload's row: `<machine> <pid> <nonce>`."""

    machine = ""

    def __init__(self):
        if not _Hold.machine:
            _Hold.machine = _this_machine()
        self.holder = f"{_Hold.machine} {os.getpid()} {secrets.token_hex(6)}"

    @staticmethod
    def gone(holder: str) -> bool:
        """A hold of a process of this machine that no longer runs."""
        machine, _, rest = holder.rpartition(" ")[0].rpartition(" ")
        try:
            pid = int(rest)
        except ValueError:
            return False
        if machine != _Hold.machine:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def _this_machine() -> str:
    """Where a pid names one process: this kernel's boot and pid namespace."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "unknown-namespace"
    return f"{boot}/{namespace}".replace(" ", "_")


def parse_offset(raw: str | None) -> int:
    if raw is None:
        raise Rejected(400, "Upload-Offset is required: where these bytes begin in the file")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
        raise Rejected(400, f"Upload-Offset must be a whole number of bytes, got {raw[:30]!r}")
    return int(raw)


def receive(
    store: Store,
    settings: Settings,
    storage: Storage,
    binary: str,
    upload_id: str,
    offset: int,
    body: Iterable[bytes],
    declared: int | None,
    client: str | None = None,
) -> dict:
    """Append a PATCH's body (`declared` bytes long, None when not said) at
    `offset`; the upload's row as it then is. When the body breaks off, what
    arrived is kept and the error raised on. A completed upload is checked."""
    row = find(store, upload_id)
    if offset != row["received"]:
        raise Rejected(409, f"upload {upload_id} is at byte {row['received']}, not {offset}; ask HEAD for its offset")
    room = row["length"] - offset
    if declared is not None and declared > room:
        raise Rejected(
            413,
            f"{declared} bytes sent at byte {offset} of {row['length']}: bytes beyond Upload-Length are refused",
        )
    hold = _Hold()
    now = time.time()
    taken = store.take_upload(upload_id, hold.holder, now + HOLD_SECONDS, now, hold.gone)
    if taken is None:
        raise Rejected(404, f"there is no upload {upload_id}")
    if taken["holder"] != hold.holder:
        raise Rejected(423, f"upload {upload_id} is receiving another request's bytes; try again in a moment")
    try:
        if taken["received"] != offset:  # another request appended meanwhile
            raise Rejected(409, f"upload {upload_id} is at byte {taken['received']}, not {offset}")
        over = _Overflow(body, room)

        def record(fields: dict) -> None:
            store.advance_upload(
                upload_id,
                hold.holder,
                held_until=time.time() + HOLD_SECONDS,
                expires_at=time.time() + settings.upload_ttl_seconds,
                **fields,
            )
            taken.update(fields)

        receiver(settings, storage).append(taken, over.chunks(), record)
        if over.exceeded:
            raise Rejected(
                413,
                f"more than the {room} bytes left of upload {upload_id} were sent: "
                "bytes beyond Upload-Length are refused",
            )
        if is_complete(taken) and taken["probe"] is None and taken["refusal"] is None:
            _check(store, settings, storage, binary, taken, client)
    finally:
        store.advance_upload(upload_id, hold.holder, release=True)
    return store.get_upload(upload_id) or taken


class _Overflow:
    """A body's chunks up to `room` bytes; notes whether more came."""

    def __init__(self, body: Iterable[bytes], room: int):
        self.body = body
        self.room = room
        self.exceeded = False

    def chunks(self):
        left = self.room
        for chunk in self.body:
            if len(chunk) > left:
                self.exceeded = True
                if left:
                    yield chunk[:left]
                return
            left -= len(chunk)
            if chunk:
                yield chunk


def _check(
    store: Store, settings: Settings, storage: Storage, binary: str, row: dict, client: str | None = None
) -> None:
    """The upload is complete: check it as an uploaded video and make its
    thumbnail, so that a job made from it need not wait for either. A video
    refused keeps only its row (saying why), not its bytes."""
    bytes_at = receiver(settings, storage)
    path = bytes_at.finished(row)
    try:
        video = intake.Staged(name=row["name"], path=path, size=row["length"])
        slots = ProbeSlots(settings.data_dir / "run")
        made: list[Future] = []
        # The thumbnail is made beside the read through the data, as soon as the probe has passed.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-thumbnail") as pool:
            try:
                info = intake.check_video(
                    settings,
                    binary,
                    slots,
                    video,
                    lambda probed: made.append(
                        pool.submit(_thumbnail, settings, bytes_at, binary, slots, row, path, probed)
                    ),
                    client=client,
                )
            except Rejected as refused:
                pool.shutdown(wait=True)
                bytes_at.done_reading(row, path)
                store.record_upload(row["id"], refusal=json.dumps({"code": refused.code, "error": refused.message}))
                bytes_at.discard(row["id"], row)
                log.info("upload %s is complete and refused: %s", row["id"], refused.message)
                return
            thumbnail = made[0].result() if made else None
    except BaseException:
        bytes_at.done_reading(row, path)
        raise
    bytes_at.done_reading(row, path)  # (the file is whole in storage only once this returns)
    store.record_upload(
        row["id"], probe=json.dumps({"media": info.as_dict(), "duration": info.duration}), thumbnail=thumbnail
    )
    log.info("upload %s is complete and checked: %s", row["id"], row["name"])


def _thumbnail(
    settings: Settings, bytes_at: Receiver, binary: str, slots: ProbeSlots, row: dict, path: Path, info
) -> str | None:
    scratch = settings.data_dir / "run"
    scratch.mkdir(parents=True, exist_ok=True)
    made = Path(tempfile.mkstemp(prefix="thumbnail-", suffix=".webp", dir=scratch)[1])
    try:
        with slots.hold():
            ffmpeg.make_thumbnail(binary, path, made, info.duration)
        key = bytes_at.thumbnail_key(row["id"])
        bytes_at.storage.put(key, made)
        return key
    except (RuntimeError, OSError) as exc:
        log.warning("no thumbnail for upload %s: %s", row["id"], exc)
        return None
    finally:
        made.unlink(missing_ok=True)


def terminate(store: Store, settings: Settings, storage: Storage, upload_id: str) -> None:
    """DELETE: the upload and its bytes are gone."""
    find(store, upload_id)
    row = store.delete_upload(upload_id)
    if row is not None:
        receiver(settings, storage).discard(upload_id, row)
        log.info("upload %s deleted", upload_id)


# --- a job from uploads ----------------------------------------------------------------------


def parse_job_request(body) -> tuple[list[str], dict[str, list[str]]]:
    """The upload ids and the form fields (as the multipart form gives them) of a JSON job request."""
    if not isinstance(body, dict):
        raise Rejected(400, 'send a JSON object, e.g. {"uploads": ["<uploadId>"], "variations": 5}')
    unexpected = sorted(set(body) - set(JOB_FIELDS))
    if unexpected:
        raise Rejected(400, f"unexpected field {unexpected[0][:40]!r}; a job takes {', '.join(JOB_FIELDS)}")
    ids = body.get("uploads")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise Rejected(400, 'uploads must be a list of upload ids, e.g. {"uploads": ["<uploadId>"]}')
    if not ids:
        raise Rejected(400, f"no uploads: send 1 to {contract.MAX_FILES} upload ids in 'uploads'")
    if len(ids) > contract.MAX_FILES:
        raise Rejected(400, f"too many files: {len(ids)} sent, at most {contract.MAX_FILES} per job")
    if len(set(ids)) != len(ids):
        raise Rejected(400, "an upload was given twice; each upload makes one source of a job")
    form: dict[str, list[str]] = {}
    for field in JOB_FIELDS[1:]:
        value = body.get(field)
        if value is None:
            continue
        if field == "variations" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            if field == "variations":
                value = "invalid"  # refused below, with the form's message
            else:
                raise Rejected(400, f"{field} must be text")
        form[field] = [value]
    return ids, form


def make_job(store: Store, settings: Settings, storage: Storage, binary: str, body) -> dict:
    """POST /api/jobs with uploads: a job whose sources are these uploads
    (each complete and accepted); the 202 body."""
    ids, form = parse_job_request(body)
    variations = intake.parse_variations(_one(form, "variations"))
    seed = intake.parse_seed(_one(form, "seed"))
    name = intake.parse_name(_one(form, "name"))
    webhook_url = webhooks.accept_url(_one(form, webhooks.FIELD), settings)
    rows = [_ready(store, settings, storage, binary, upload_id) for upload_id in ids]
    bytes_at = receiver(settings, storage)
    # The job takes its first upload's id: in a bucket, that upload's file is
    # stored as the source of a job with this id already, and stays where it is.
    job_id = ids[0]
    adopted = rows[0] if bytes_at.adopts else None
    accepted = []
    for row in rows:
        probe = json.loads(row["probe"])
        item = {
            "name": row["name"],
            "size": row["length"],
            "info": ffmpeg.MediaInfo.from_dict(probe["media"], probe["duration"]),
        }
        if row is adopted:
            item.update(stored=bytes_at.data_key(row["id"]), file_id=row["id"])
        else:
            item["key"] = bytes_at.data_key(row["id"])
        accepted.append(item)
    try:
        store.claim_uploads(ids, job_id)
    except UploadClaimed as exc:
        raise Rejected(409, str(exc)) from None
    try:
        created = intake.accept_stored(
            store,
            settings,
            storage,
            accepted,
            variations,
            seed,
            name,
            job_id,
            thumbnail_from=None if adopted else rows[0]["thumbnail"],
            thumbnail_stored=rows[0]["thumbnail"] if adopted else None,
            webhook_url=webhook_url,
        )
    except BaseException:
        store.unclaim_uploads(ids, job_id)
        raise
    for row in rows:
        try:
            # what the job took stays: the adopted file, else its own copy (a hard link on disk)
            bytes_at.discard(row["id"], {**row, "job_id": job_id})
        except (StorageError, OSError) as exc:
            log.error("upload %s made job %s; its bytes could not be deleted (expiry will): %s", row["id"], job_id, exc)
    return created


def _one(form: Mapping[str, list[str]], field: str) -> str | None:
    values = form.get(field)
    return values[0] if values else None


def _ready(store: Store, settings: Settings, storage: Storage, binary: str, upload_id: str) -> dict:
    """The upload, complete and accepted as a video; else the Rejected that says why not."""
    row = store.get_upload(upload_id) if _ID.fullmatch(upload_id) else None
    if row is None:
        raise Rejected(404, f"there is no upload {upload_id[: contract.MAX_ID_LENGTH]!r}", upload=upload_id[:64])
    if row["job_id"] is not None:
        raise Rejected(409, f"upload {upload_id} ({row['name']}) made job {row['job_id']} already", upload=upload_id)
    if row["expires_at"] <= time.time():
        raise Rejected(410, f"upload {upload_id} ({row['name']}) expired; upload it again", upload=upload_id)
    if not is_complete(row):
        raise Rejected(
            409,
            f"upload {upload_id} ({row['name']}) is not complete: {row['received']} of {row['length']} bytes received",
            upload=upload_id,
            file=row["name"],
        )
    if row["probe"] is None and row["refusal"] is None:
        # Complete, but the request that completed it did not live to check it
        # (or is checking it still): check it now, under a hold of our own.
        hold = _Hold()
        now = time.time()
        taken = store.take_upload(upload_id, hold.holder, now + HOLD_SECONDS, now, hold.gone)
        if taken is None or taken["holder"] != hold.holder:
            raise Rejected(
                409, f"upload {upload_id} ({row['name']}) is being checked; try again in a moment", upload=upload_id
            )
        try:
            if taken["probe"] is None and taken["refusal"] is None:
                _check(store, settings, storage, binary, taken)
        finally:
            store.advance_upload(upload_id, hold.holder, release=True)
        row = store.get_upload(upload_id) or row
    if row["refusal"] is not None:
        refusal = json.loads(row["refusal"])
        raise Rejected(refusal["code"], refusal["error"], file=row["name"], upload=upload_id)
    return row
