"""Housekeeping that keeps the stored files bounded: expiry, eviction, stuck
jobs and the sweep of temporaries and orphans. The supervisor runs these from
APScheduler (and the sweep once at start); nothing here runs in a web worker
except `delete_job_everywhere`, which `DELETE /api/jobs/<id>` shares. Files
are reached through the storage (`refresher.storage`), on disk or in a bucket.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Set as AbstractSet
from pathlib import Path

from .settings import Settings

from . import spool
from .media import effects as fx
from .storage import Storage, StoredFile, for_settings, job_of
from .storage.receiving import receiver_for
from .store import Store

log = logging.getLogger(__name__)

ORPHAN_AGE_SECONDS = 600  # a job folder being created right now is younger than this


def job_dir(data_dir: Path, job_id: str) -> Path:
    """The job's folder under DATA_DIR (where its files are, unless STORAGE_URL says otherwise)."""
    return data_dir / "jobs" / job_id


def delete_job_everywhere(store: Store, storage: Storage, job_id: str) -> None:
    """Files first, then rows: on a full disk the files' room comes back
    before the rows' delete needs some. A failure in between leaves a job
    whose files are gone (it shows them gone, 404 and 410, and deleting it
    again removes its rows)."""
    storage.delete_job(job_id)
    store.delete_job(job_id)


def expire_finished_jobs(
    store: Store, settings: Settings, now: float | None = None, storage: Storage | None = None
) -> list[str]:
    storage = storage or for_settings(settings)
    now = time.time() if now is None else now
    expired = [job["id"] for job in store.expired_jobs(now)]
    for job_id in expired:
        delete_job_everywhere(store, storage, job_id)
    if expired:
        log.info("expired %d finished job(s)", len(expired))
    return expired


def fail_stale_queued_jobs(store: Store, settings: Settings, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    failed = []
    for job in store.stale_queued_jobs(now):
        if store.fail_queued_job(
            job["id"], "the job waited in the queue past its expiry and was not started", now, settings.job_ttl_seconds
        ):
            failed.append(job["id"])
    if failed:
        log.warning("failed %d job(s) that stayed queued past expiry", len(failed))
    return failed


def evict_for_space(
    store: Store, settings: Settings, extra_needed: int = 0, storage: Storage | None = None
) -> list[str]:
    """Delete the oldest finished jobs, only as many as it takes for the
    stored files (plus `extra_needed` bytes about to be written) to be under
    STORAGE_LIMIT_MB, for `extra_needed` bytes to be free, and for the disk to
    be under 85 % full. When deleting every finished job would still leave no
    room for `extra_needed`, nothing is deleted: eviction never makes room for
    what cannot fit anyway. Queued and running jobs are never touched."""
    return _evict(store, settings, storage or for_settings(settings), extra_needed)[0]


def _evict(store: Store, settings: Settings, storage: Storage, extra_needed: int) -> tuple[list[str], int, int]:
    """`evict_for_space`; also returns the bytes stored afterwards, and of
    those the bytes no eviction can free (unfinished jobs' files, uploads
    being received). The storage is measured once (with object storage,
    one listing of the bucket)."""
    oldest_first = [job["id"] for job in store.finished_jobs_oldest_first()]
    used, sizes = storage.usage(oldest_first)
    finished = [(job_id, sizes[job_id]) for job_id in oldest_first]
    evictable = sum(size for _, size in finished)
    if extra_needed and _room_lacking(settings, storage, used, extra_needed) > evictable:
        return [], used, used - evictable
    evicted = []
    for job_id, size in finished:
        if _room_lacking(settings, storage, used, extra_needed) <= 0 and not storage.too_full():
            break
        delete_job_everywhere(store, storage, job_id)
        used -= size
        evictable -= size
        evicted.append(job_id)
    if evicted:
        log.warning("evicted %d finished job(s) to free space", len(evicted))
    return evicted, used, used - evictable


def _room_lacking(settings: Settings, storage: Storage, used: int, extra_needed: int) -> int:
    """Bytes to delete before `extra_needed` more fit under STORAGE_LIMIT_MB and on the disk."""
    lacking = used + extra_needed - settings.storage_limit_bytes
    free = storage.free_bytes()
    return lacking if free is None else max(lacking, extra_needed - free)


def sweep_temporaries(
    store: Store,
    settings: Settings,
    running: AbstractSet[str] = frozenset(),
    min_age: float = ORPHAN_AGE_SECONDS,
    storage: Storage | None = None,
) -> list[str]:
    """Remove stored files no row owns: partial outputs on a shared disk
    (except those of `running` variation ids), files of deleted jobs,
    uploads no request holds any more, and resumable uploads' bytes without
    their row. A file younger than `min_age` may
    belong to a job being created: it is left alone. Returns the keys (and
    upload folders) removed."""
    storage = storage or for_settings(settings)
    now = time.time()
    known_jobs = store.all_job_ids()
    # (in a bucket, a finished resumable upload is stored as the source of the job it is to make, with its id)
    uploads = store.upload_ids() - known_jobs
    owned: dict[str, set[str]] = {}
    orphans: dict[str, list[StoredFile]] = {}
    strays: list[str] = []
    for item in storage.files("jobs/"):
        job_id = job_of(item.key)
        if job_id in uploads:
            continue  # the upload's row owns it (`expire_uploads`)
        if job_id is None or job_id not in known_jobs:
            orphans.setdefault(job_id or item.key, []).append(item)
            continue
        if job_id not in owned:
            owned[job_id] = store.known_paths(job_id)
        if item.key in owned[job_id]:
            continue
        name = item.key.rsplit("/", 1)[-1]
        if name.split(".", 1)[0] in running:
            continue
        if ".part." in name or now - item.modified > min_age:
            strays.append(item.key)
    removed = list(strays)
    storage.delete(strays)
    for job_id, items in orphans.items():
        if all(now - item.modified > min_age for item in items):
            if job_of(items[0].key) == job_id:
                storage.delete_job(job_id)
            else:
                storage.delete([item.key for item in items])
            removed += [item.key for item in items]
    removed += [str(path) for path in spool.remove_abandoned(settings.data_dir)]
    removed += [f"uploads/{upload_id}/" for upload_id in _sweep_uploads(store, settings, storage, min_age)]
    if removed:
        log.info("swept %d stray file(s)", len(removed))
    return removed


def expire_uploads(
    store: Store, settings: Settings, now: float | None = None, storage: Storage | None = None
) -> list[str]:
    """Remove the resumable uploads past their expiry (UPLOAD_TTL_HOURS after
    their last byte): rows and bytes, parts in the bucket included."""
    storage = storage or for_settings(settings)
    now = time.time() if now is None else now
    receiver = receiver_for(storage, settings.data_dir)
    removed = []
    for row in store.expired_uploads(now):
        if row["holder"] is not None and (row["held_until"] or 0) > now:
            continue  # a PATCH is being received right now: it moves the expiry on
        store.delete_upload(row["id"])
        receiver.discard(row["id"], row)
        removed.append(row["id"])
    if removed:
        log.info("expired %d upload(s)", len(removed))
    return removed


def _sweep_uploads(store: Store, settings: Settings, storage: Storage, min_age: float) -> list[str]:
    """Remove the bytes of uploads that no row owns (a crash between the two), older than `min_age`."""
    now = time.time()
    receiver = receiver_for(storage, settings.data_dir)
    stored = list(receiver.stored())
    if not stored:
        return []
    known = store.upload_ids()
    removed = []
    for upload_id, changed in stored:
        if upload_id not in known and now - changed > min_age:
            receiver.discard(upload_id)
            removed.append(upload_id)
    return removed


# What an output takes, per second: the encoder's CRF decides, under a cap of
# 12 bit/s per output pixel (effects.MAXRATE_BITS_PER_PIXEL: 24.9 Mb/s at
# 1080x1920). Measured at that CRF (BENCHMARKS.md): real footage 4.5 to 7.7
# bit/s per pixel (1280x720, 640x360, 640x272), lavfi's testsrc2 9.8, a
# detailed 1080x1920 clip at the cap. So the picture's worst case takes 10
# per pixel, with a floor for tiny pictures, where every frame's headers and
# index entries cost more than its pixels (a 16x16 picture at 60 fps), and
# copied AAC audio at up to 192 kb/s.
#
# That worst case is far from most sources: a still picture at 1080p60 was
# estimated 143 MB and made 1.0 MB, and finished jobs were evicted for the
# difference. CRF gives back about the source's own quality, so the outputs
# follow the source's bitrate (README, "Size": about the source's, or less,
# for ordinary sources; more for sources compressed below 0.2 bit per pixel
# per frame): an output is estimated at SOURCE_FACTOR times the source's
# own bitrate, never above the picture's worst case. Measured: a still gray
# 1080p60 picture with AAC (101 kb/s) made 122 kb/s, 320 kb/s with grain
# (the "noise" effect). It is an estimate, not a bound: a source compressed
# far below its quality can still outgrow it, so the room is checked again
# as its outputs are written (`make_room_as_it_runs`, from what they
# measured), and a job that fills the disk after all fails with a clear error.
ESTIMATE_BITS_PER_PIXEL = 10
SOURCE_FACTOR = 4
MIN_VIDEO_BITS_PER_SECOND = 100_000
AUDIO_BITS_PER_SECOND = 192_000
UNKNOWN_DURATION_SECONDS = 600  # jobs accepted before a source had to state its length
MEASURED_MARGIN = 1.25  # a source's next outputs, from the largest one it made so far


def estimate_output_bytes(
    duration: float, width: int, height: int, has_audio: bool, source_bytes: int | None = None
) -> int:
    """About how large one variation of a width×height source of `duration`
    seconds (and `source_bytes`, when known) will be."""
    out_w, out_h = fx.output_size(width, height)
    audio = AUDIO_BITS_PER_SECOND if has_audio else 0
    worst = max(MIN_VIDEO_BITS_PER_SECOND, ESTIMATE_BITS_PER_PIXEL * out_w * out_h) + audio
    bits: float = worst
    if source_bytes and duration:
        bits = min(worst, max(MIN_VIDEO_BITS_PER_SECOND + audio, SOURCE_FACTOR * source_bytes * 8 / duration))
    return int(duration * bits / 8)


def estimate_source_output(f: dict) -> int:
    """One variation of the source file `f` (a row, or an upload's probe: its
    duration, size and `media`)."""
    media = f["media"]
    duration = f["duration"] or UNKNOWN_DURATION_SECONDS
    return estimate_output_bytes(duration, media["width"], media["height"], media["hasAudio"], f.get("size"))


def estimate_job_bytes(files: list[dict], variations_per_video: int) -> int:
    """The outputs of a job, from each source's duration, size and picture."""
    return variations_per_video * sum(estimate_source_output(f) for f in files)


def outputs_still_to_make(store: Store, job_id: str) -> int:
    """What the job's variations not made yet will take: per source, the
    estimate until one of its outputs exists, then the largest output it
    made (with a margin)."""
    files = {f["id"]: f for f in store.get_job_files(job_id)}
    variations = store.get_job_variations(job_id)
    made: dict[str, int] = {}
    for v in variations:
        if v["status"] == "completed" and v["size"]:
            made[v["file_id"]] = max(made.get(v["file_id"], 0), v["size"])
    total = 0
    for v in variations:
        if v["status"] in ("queued", "processing"):
            measured = made.get(v["file_id"])
            total += int(measured * MEASURED_MARGIN) if measured else estimate_source_output(files[v["file_id"]])
    return total


def megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MB"


def storage_limit_problem(settings: Settings, needed: int, held: int) -> str | None:
    """The one rule of STORAGE_LIMIT_MB for a job, asked at upload (413) and
    again when it starts (it fails): its outputs still to make (`needed`)
    must fit beside what no eviction frees (`held`: its own sources, the
    files of unfinished jobs, uploads being received). None when they fit."""
    if needed + held <= settings.storage_limit_bytes:
        return None
    return (
        f"this job needs about {megabytes(needed + held)} (its videos and their variations, with what "
        f"the queue holds), more than the storage limit of {settings.storage_limit_mb:g} MB "
        f"(STORAGE_LIMIT_MB) leaves even with every finished job evicted; send fewer variations or shorter videos"
    )


def make_room_for(store: Store, settings: Settings, job: dict, storage: Storage | None = None) -> str | None:
    """Before a job starts: evict finished jobs if its outputs would push the
    stored files over their limits; return a reason if they cannot fit, in
    which case nothing was evicted."""
    storage = storage or for_settings(settings)
    needed = outputs_still_to_make(store, job["id"])
    _evicted, _used, held = _evict(store, settings, storage, needed)
    problem = storage_limit_problem(settings, needed, held)
    if problem is not None:
        return problem
    free = storage.free_bytes()
    if free is not None and free < needed:
        return (
            f"not enough disk space for this job: its outputs need about {megabytes(needed)} "
            f"and only {megabytes(free)} are free"
        )
    return None


def make_room_as_it_runs(store: Store, settings: Settings, job_id: str, storage: Storage | None = None) -> list[str]:
    """An output of a running job was written: what its variations still to
    make will take is known better now (what its outputs measured), so the
    room is checked again and, if short, the oldest finished jobs evicted
    for it, no more. A job short of room it cannot get runs on (and fails
    if the disk fills); it is never stopped for an estimate."""
    storage = storage or for_settings(settings)
    needed = outputs_still_to_make(store, job_id)
    if needed == 0:
        return []
    return _evict(store, settings, storage, needed)[0]


def run_cleanup(
    store: Store, settings: Settings, running: AbstractSet[str] = frozenset(), storage: Storage | None = None
) -> None:
    """One pass of the cleanup daemon."""
    storage = storage or for_settings(settings)
    started = time.monotonic()
    log.info("cleanup pass in process %d", os.getpid())
    store.reserve.keep()  # given back when the disk filled: made again once it has room
    expire_finished_jobs(store, settings, storage=storage)
    expire_uploads(store, settings, storage=storage)
    fail_stale_queued_jobs(store, settings)
    evict_for_space(store, settings, storage=storage)
    sweep_temporaries(store, settings, running, storage=storage)
    log.info("cleanup pass in process %d done in %.2f s", os.getpid(), time.monotonic() - started)
