"""Turning uploaded videos into a queued job.

The videos arrive on disk, in a staging folder under DATA_DIR (see
`api/uploads.py`). Each is probed with ffmpeg there as soon as it has
arrived, and stored under the job's prefix (`refresher.storage`: moved into
DATA_DIR, or uploaded to object storage), the first one's thumbnail with it
(`EarlyIntake`); only when all of them are readable MP4/MOV videos is the
job created — its rows written in one transaction under the queue cap.
Anything wrong is a `Rejected` naming the problem (and the file), and leaves
nothing stored.

User-supplied file names never decide a path on disk: files are stored under
generated ids, and the names are only shown back, sanitized.
"""

from __future__ import annotations

import errno
import logging
import re
import secrets
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Mapping, Set

from .settings import Settings

from . import lifecycle, contract, webhooks
from .errors import Rejected
from .media import effects as fx
from .media import ffmpeg
from .media.slots import PROBES_AT_ONCE, ProbeSlots
from .storage import Storage, StorageError, job_prefix, source_key
from .names import clean_job_name, has_invisible, name_from_files, safe_stem
from .store import QueueFull, Store, new_id

log = logging.getLogger(__name__)

# The longest an ffmpeg reading an upload (its probe, the read of its
# packets, its thumbnail) may hold a probe slot: past it, it is killed and
# the file refused (415). Reading a 500 MB file's packets takes a few
# seconds; a platform's router gives a request 30 s from its last byte.
PROBE_SECONDS = 20


@dataclass(frozen=True)
class Staged:
    """One uploaded video, on disk in the request's staging folder."""

    name: str  # as the person named it, sanitized
    path: Path
    size: int


# --- the form fields --------------------------------------------------------------------


def _one(form: Mapping[str, list[str]], field: str) -> str | None:
    values = form.get(field) or []
    if len(values) > 1:
        raise Rejected(400, f"{field} was sent more than once")
    return values[0] if values else None


def parse_variations(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return contract.DEFAULT_VARIATIONS
    raw = raw.strip()
    low, high = contract.MIN_VARIATIONS, contract.MAX_VARIATIONS
    if not re.fullmatch(r"[0-9]{1,3}", raw) or not low <= int(raw) <= high:
        raise Rejected(400, f"variations must be a whole number from {low} to {high}, got {raw[:20]!r}")
    return int(raw)


def parse_seed(raw: str | None) -> str:
    if raw is None or raw == "":
        return secrets.token_hex(6)
    if len(raw) > contract.MAX_SEED_LENGTH or has_invisible(raw):
        raise Rejected(400, f"seed must be printable text of at most {contract.MAX_SEED_LENGTH} characters")
    return raw


def parse_name(raw) -> str | None:
    """The job's name, or None when none was given (it is then named after its files)."""
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    name = clean_job_name(raw)
    if name is None:
        raise Rejected(
            400,
            f"name must be {contract.MIN_JOB_NAME_LENGTH} to {contract.MAX_JOB_NAME_LENGTH} "
            f'printable characters, e.g. "Spring sale"',
        )
    return name


# --- the job ------------------------------------------------------------------------------


class EarlyIntake:
    """Each uploaded video is probed, and stored under the job's prefix, as
    soon as its part of the request body has arrived — on threads of the
    request's own, while the rest of the body still streams in. So once the
    last byte is in, only the last file's probe and store remain: behind a
    platform router that allows 30 s from the end of the body to the first
    byte of the answer, a job of several large files is answered in time.

    Two videos are taken at once (one is stored while the other is read),
    and the first one's thumbnail is made on a thread of its own as soon as
    its probe has passed: the ffmpeg calls of one request run within the
    host's probe slots (`ProbeSlots`: at most two at once, whatever the
    number of requests, and one at a time for one client), each for
    PROBE_SECONDS at most.

    The job's id is reserved up front; what was stored for it is deleted by
    `close` unless the job was created."""

    def __init__(self, settings: Settings, storage: Storage, binary: str, client: str | None = None):
        self.settings = settings
        self.storage = storage
        self.binary = binary
        self.client = client  # who sent it (`auth.caller_key`): one probe slot at most
        self.job_id = new_id()
        self.slots = ProbeSlots(settings.data_dir / "run")
        self.created = False
        self._pool = ThreadPoolExecutor(max_workers=PROBES_AT_ONCE, thread_name_prefix="intake")
        self._thumbnails = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake-thumbnail")
        self._taken: dict[Path, Future] = {}
        self._first: Path | None = None
        self._thumbnail: Future | None = None

    def take(self, video: Staged) -> None:
        """Start on a video whose bytes are all on disk (once per video)."""
        if video.path not in self._taken:
            if self._first is None:
                self._first = video.path
            self._taken[video.path] = self._pool.submit(self._take, video)

    def accepted(self, video: Staged) -> dict:
        """The probed and stored video; its Rejected if it was not accepted."""
        self.take(video)
        return self._taken[video.path].result()

    def thumbnail(self) -> str | None:
        """The stored thumbnail's key, once made; None when there is none."""
        return self._thumbnail.result() if self._thumbnail is not None else None

    def _take(self, video: Staged) -> dict:
        def probed(info: ffmpeg.MediaInfo) -> None:
            if video.path == self._first:
                self._thumbnail = self._thumbnails.submit(self._make_thumbnail, video, info)

        info = check_video(self.settings, self.binary, self.slots, video, probed, client=self.client)
        if video.path == self._first and self._thumbnail is not None:
            self._thumbnail.result()  # made from the staged file, which storing moves away
        file_id = new_id()
        key = source_key(self.job_id, file_id)
        self.storage.put(key, video.path)
        return {"name": video.name, "size": video.size, "file_id": file_id, "stored": key, "info": info}

    def _make_thumbnail(self, video: Staged, info) -> str | None:
        made = video.path.with_name(video.path.name + ".webp")
        try:
            with self.slots.hold(self.client):
                ffmpeg.make_thumbnail(self.binary, video.path, made, info.duration, timeout=PROBE_SECONDS)
        except (RuntimeError, OSError) as exc:
            log.warning("no thumbnail for %s: %s", video.name, exc)
            made.unlink(missing_ok=True)
            return None
        key = f"jobs/{self.job_id}/thumbnail.webp"
        self.storage.put(key, made)
        return key

    def close(self) -> None:
        """When the request ends: wait for the threads; unless the job was
        created, delete whatever was stored for it."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._thumbnails.shutdown(wait=True, cancel_futures=True)
        if not self.created and self._taken:
            try:
                self.storage.delete_job(self.job_id)
            except StorageError as exc:
                log.error("an upload was refused, and what it stored could not be deleted (the sweep will): %s", exc)


def check_video(
    settings: Settings,
    binary: str,
    slots: ProbeSlots,
    video: Staged,
    probed: Callable[[ffmpeg.MediaInfo], None] | None = None,
    client: str | None = None,
) -> ffmpeg.MediaInfo:
    """Whether the file on disk is a video the service takes (a Rejected
    naming it if not), and what it is. `probed` is told as soon as its probe
    has passed, before its data is read through. `client` (who sent it) holds
    one probe slot at most; each read is bounded by PROBE_SECONDS."""
    if video.size == 0:
        raise Rejected(415, f"{video.name} is empty, not a readable MP4/MOV video", file=video.name)
    try:
        with slots.hold(client):
            info = ffmpeg.probe(binary, video.path, timeout=PROBE_SECONDS)
    except (ffmpeg.PictureTooLarge, ffmpeg.TooManyStreams, ffmpeg.NoVideoStream, ffmpeg.ProbeTimedOut) as exc:
        raise Rejected(415, f"{video.name} {exc}", file=video.name) from None
    except ffmpeg.ProbeError as exc:
        raise Rejected(415, f"{video.name} {exc}; send MP4 or MOV videos", file=video.name) from None
    _check_duration(video.name, info.duration, settings.max_duration_seconds)
    _check_picture(video.name, info.width, info.height, settings.max_resolution)
    if probed is not None:
        probed(info)
    try:
        with slots.hold(client):
            # Its video's frame count, kept for every variation with a speed
            # change, and where its data ends (packets copied, nothing decoded;
            # its length is capped now).
            demuxed = ffmpeg.demux(binary, video.path, timeout=PROBE_SECONDS)
    except ffmpeg.ProbeTimedOut as exc:
        raise Rejected(415, f"{video.name} {exc}", file=video.name) from None
    if demuxed is not None:
        _check_frame_rate(video.name, demuxed.frame_rate, settings.max_frame_rate)
        _check_complete(video.name, demuxed.data_end, info.duration)
    return info.with_frames((demuxed.frames, demuxed.frame_rate) if demuxed else None)


def accept_job(
    store: Store,
    settings: Settings,
    storage: Storage,
    binary: str,
    staged: list[Staged],
    form: Mapping[str, list[str]],
    early: EarlyIntake | None = None,
) -> dict:
    """Validate the upload, create the job, return the 202 body. `early` has
    been probing and storing the videos as they arrived (else it starts now)."""
    if not staged:
        raise Rejected(400, f"no files: send 1 to {contract.MAX_FILES} MP4/MOV videos in the 'videos' field")
    if len(staged) > contract.MAX_FILES:
        raise Rejected(400, f"too many files: {len(staged)} sent, at most {contract.MAX_FILES} per job")
    variations = parse_variations(_one(form, "variations"))
    seed = parse_seed(_one(form, "seed"))
    name = parse_name(_one(form, "name"))
    webhook_url = webhooks.accept_url(_one(form, webhooks.FIELD), settings)
    own = early is None
    early = early or EarlyIntake(settings, storage, binary)
    try:
        accepted = [early.accepted(video) for video in staged]
        _check_storage(settings, accepted, variations)
        body = _create_job(
            store,
            settings,
            storage,
            accepted,
            variations,
            seed,
            name,
            job_id=early.job_id,
            thumbnail_stored=early.thumbnail(),
            webhook_url=webhook_url,
        )
        early.created = True
        return body
    finally:
        if own:
            early.close()


def accept_stored(
    store: Store,
    settings: Settings,
    storage: Storage,
    accepted: list[dict],
    variations: int,
    seed: str,
    name: str | None,
    job_id: str,
    thumbnail_from: str | None,
    thumbnail_stored: str | None = None,
    webhook_url: str | None = None,
) -> dict:
    """A job from videos checked already and stored under keys of their own
    (resumable uploads): each `key` is copied under the job's prefix, and
    what is there already (`stored`, and `thumbnail_stored`) stays there if
    the job is not made after all. The 202 body."""
    _check_storage(settings, accepted, variations)
    keep = {item["stored"] for item in accepted if "stored" in item}
    if thumbnail_stored is not None:
        keep.add(thumbnail_stored)
    return _create_job(
        store,
        settings,
        storage,
        accepted,
        variations,
        seed,
        name,
        job_id=job_id,
        thumbnail_stored=thumbnail_stored,
        thumbnail_from=thumbnail_from,
        webhook_url=webhook_url,
        keep=keep,
    )


def _check_duration(name: str, duration: float | None, longest: float) -> None:
    """Encoding costs CPU in proportion to a source's length, whatever its size
    in bytes (ten minutes of a still picture fit in 17 KB), so the length is capped."""
    if duration is None:
        raise Rejected(415, f"{name} does not say how long it is; send MP4 or MOV videos", file=name)
    if duration > longest:
        shown = f"{duration:.0f}" if round(duration) > longest else f"{duration:.2f}"  # never "300 s; at most 300 s"
        raise Rejected(
            400, f"{name} is {shown} s long; the longest accepted is {longest:g} s (MAX_DURATION_SECONDS)", file=name
        )


def _check_picture(name: str, width: int, height: int, largest: tuple[int, int]) -> None:
    """Decoding costs CPU in proportion to the picture: an 8K source took 4.5 s
    of wall time per second of video where 720p took 0.86 s."""
    if max(width, height) > max(largest) or min(width, height) > min(largest):
        raise Rejected(
            415,
            f"{name} is {width}×{height}; sources up to {largest[0]}×{largest[1]} (either way "
            f"round) are accepted (MAX_RESOLUTION)",
            file=name,
        )


def _check_frame_rate(name: str, rate: float, highest: float) -> None:
    """As with the picture: every frame is decoded, and a 1000 fps clip cost 4 s per second of video."""
    if rate > highest:
        raise Rejected(
            415, f"{name} is {rate:g} fps; sources up to {highest:g} fps are accepted (MAX_FRAME_RATE)", file=name
        )


def _check_complete(name: str, data_end: float, duration: float | None) -> None:
    """A file cut short (an upload or a copy that stopped) keeps an index that
    promises the whole length: its outputs would stop where its data does."""
    if duration and data_end + max(0.5, 0.02 * duration) < duration:
        raise Rejected(415, f"{name} is cut short: its data ends at {data_end:.1f} s of {duration:.1f} s", file=name)


def check_queue(store: Store, settings: Settings) -> None:
    """503 while MAX_QUEUED_JOBS jobs are unfinished: asked before a byte of an
    upload is read or a source copied, so that a full queue costs nothing;
    writing the job (or reopening one: retry, resume) asks again, atomically
    with the write."""
    try:
        store.check_queue_room(settings.max_queued_jobs)
    except QueueFull as full:
        raise queue_full(full) from None


def queue_full(full: QueueFull) -> Rejected:
    """The answer to a full queue, whatever tried to join it (an upload, a
    rerun, a retry or a resume)."""
    return Rejected(503, f"the queue is full ({full.cap} unfinished jobs); try again later", retryAfter=30)


def _check_storage(settings: Settings, accepted: list[dict], variations: int) -> None:
    """A job whose sources and outputs alone would not fit under STORAGE_LIMIT_MB
    is refused now, rather than failing later (and evicting nothing for it):
    the rule its start asks again (`lifecycle.storage_limit_problem`)."""
    outputs = lifecycle.estimate_job_bytes(
        [
            {"duration": item["info"].duration, "size": item["size"], "media": item["info"].as_dict()}
            for item in accepted
        ],
        variations,
    )
    problem = lifecycle.storage_limit_problem(settings, outputs, sum(item["size"] for item in accepted))
    if problem is not None:
        raise Rejected(413, problem)


def _create_job(
    store: Store,
    settings: Settings,
    storage: Storage,
    accepted: list[dict],
    variations: int,
    seed: str,
    name: str | None,
    job_id: str | None = None,
    thumbnail_stored: str | None = None,
    thumbnail_from: str | None = None,
    webhook_url: str | None = None,
    keep: Set[str] = frozenset(),
) -> dict:
    """Write the job: each source is under the job's prefix — stored there
    already (`stored`, with its `file_id`), or copied from another job's key
    (`key`) — then the rows, in one transaction under the queue cap. The
    thumbnail is stored already or copied from `thumbnail_from`. If anything
    fails, every file stored for the job is deleted (but those in `keep`)."""
    job_id = job_id or new_id()
    try:
        now = time.time()
        files, rows = [], []
        all_effects = fx.draw_job_effects(seed, len(accepted), variations)
        thumbnail = thumbnail_stored
        if thumbnail_from is not None:
            thumbnail = f"jobs/{job_id}/thumbnail.webp"
            storage.copy(thumbnail_from, thumbnail)
        for position, item in enumerate(accepted):
            if "stored" in item:
                file_id, upload_key = item["file_id"], item["stored"]
            else:
                file_id = new_id()
                upload_key = source_key(job_id, file_id)
                storage.copy(item["key"], upload_key)
            files.append(
                {
                    "id": file_id,
                    "position": position,
                    "name": item["name"],
                    "size": item["size"],
                    "upload_path": upload_key,
                    "duration": item["info"].duration,
                    "media": item["info"].as_dict(),
                }
            )
            stem = safe_stem(item["name"])
            for index, effects in enumerate(all_effects[position], start=1):
                variation_id = new_id()
                short = secrets.token_hex(2)
                info = item["info"]
                rows.append(
                    {
                        "id": variation_id,
                        "file_id": file_id,
                        "variation_index": index,
                        "effects": effects,
                        "name": f"{stem}_var{index}_{short}.mp4",
                        "output_path": f"jobs/{job_id}/{variation_id}.mp4",
                        "est_cost": fx.estimated_cost(effects, info.width, info.height, info.duration),
                    }
                )
        try:
            store.create_job(
                {
                    "id": job_id,
                    "name": name,
                    "variations_per_video": variations,
                    "seed": seed,
                    "thumbnail_path": thumbnail,
                    "created_at": now,
                    "expires_at": now + settings.job_ttl_seconds,
                    "webhook_url": webhook_url,
                },
                files,
                rows,
                max_unfinished=settings.max_queued_jobs,
            )
        except QueueFull as full:
            raise queue_full(full) from None
    except BaseException as exc:
        try:
            if keep:
                storage.delete([f.key for f in storage.files(job_prefix(job_id)) if f.key not in keep])
            else:
                storage.delete_job(job_id)
        except StorageError as again:
            log.error(
                "job %s was not created, and its stored files could not be deleted (the sweep will): %s", job_id, again
            )
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise Rejected(507, "the server's disk is full; try again later or ask for space to be freed") from None
        raise
    log.info("job %s queued: %d file(s) × %d variation(s)", job_id, len(files), variations)
    return {
        "jobId": job_id,
        "name": name or name_from_files([f["name"] for f in files]),
        "status": "queued",
        "variationsPerVideo": variations,
        "totalVariations": len(rows),
        "seed": seed,
        "files": [{"id": f["id"], "name": f["name"], "size": f["size"]} for f in files],
        "statusUrl": f"/api/jobs/{job_id}",
    }


# --- run again --------------------------------------------------------------------------------


def parse_rerun(body, original: dict) -> tuple[int, str, str | None]:
    """variations, seed and name of a rerun: from the JSON body, else the
    original's variations and name and a new seed."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise Rejected(400, 'send a JSON object, e.g. {"seed": "summer", "variations": 3}, or nothing')
    unexpected = sorted(set(body) - {"seed", "name", "variations", webhooks.FIELD})
    if unexpected:
        raise Rejected(
            400, f"unexpected field {unexpected[0][:40]!r}; a rerun takes seed, name, variations and {webhooks.FIELD}"
        )
    raw_variations = body.get("variations")
    if raw_variations is None:
        variations = original["variations_per_video"]
    elif isinstance(raw_variations, int) and not isinstance(raw_variations, bool):
        variations = parse_variations(str(raw_variations))
    elif isinstance(raw_variations, str):
        variations = parse_variations(raw_variations)
    else:
        variations = parse_variations("invalid")
    raw_seed = body.get("seed")
    if raw_seed is not None and not isinstance(raw_seed, str):
        raise Rejected(400, f"seed must be printable text of at most {contract.MAX_SEED_LENGTH} characters")
    seed = parse_seed(raw_seed)
    name = parse_name(body["name"]) if "name" in body else original["name"]
    return variations, seed, name


def rerun_webhook(body, original: dict, settings: Settings) -> str | None:
    """The rerun's webhook: the one given (null or "" for none), else the
    original's while webhooks can be signed here."""
    if isinstance(body, dict) and webhooks.FIELD in body:
        return webhooks.accept_url(body[webhooks.FIELD], settings)
    return original["webhook_url"] if settings.webhook_secret else None


def rerun_job(store: Store, settings: Settings, storage: Storage, original: dict, files: list[dict], body) -> dict:
    """A new job from the sources of `original` (which must still be stored),
    with a new seed or the one given: the sources (and the thumbnail) are
    copied to the new job's keys — hard links on a disk that allows them, a
    copy inside the bucket in object storage — and their probe, kept in the
    database, stands."""
    variations, seed, name = parse_rerun(body, original)
    webhook_url = rerun_webhook(body, original, settings)
    accepted = [
        {
            "name": f["name"],
            "size": f["size"],
            "key": f["upload_path"],
            "info": ffmpeg.MediaInfo.from_dict(f["media"], f["duration"]),
        }
        for f in files
    ]
    _check_storage(settings, accepted, variations)
    created = _create_job(
        store,
        settings,
        storage,
        accepted,
        variations,
        seed,
        name,
        thumbnail_from=original["thumbnail_path"],
        webhook_url=webhook_url,
    )
    log.info("job %s is a rerun of job %s (seed %r)", created["jobId"], original["id"], seed)
    return created
