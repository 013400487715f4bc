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
    """Rows first, then files: a crash in between leaves only files, which the sweep removes."""
    store.delete_job(job_id)
    storage.delete_job(job_id)


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


def _evict(store: Store, settings: Settings, storage: Storage, extra_needed: int) -> tuple[list[str], int]:
    """`evict_for_space`; also returns the bytes stored afterwards. The
    storage is measured once (with object storage, one listing of the bucket)."""
    oldest_first = [job["id"] for job in store.finished_jobs_oldest_first()]
    used, sizes = storage.usage(oldest_first)
    finished = [(job_id, sizes[job_id]) for job_id in oldest_first]
    if extra_needed and _room_lacking(settings, storage, used, extra_needed) > sum(size for _, size in finished):
        return [], used
    evicted = []
    for job_id, size in finished:
        if _room_lacking(settings, storage, used, extra_needed) <= 0 and not storage.too_full():
            break
        delete_job_everywhere(store, storage, job_id)
        used -= size
        evicted.append(job_id)
    if evicted:
        log.warning("evicted %d finished job(s) to free space", len(evicted))
    return evicted, used


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
    owned: dict[str, set[str]] = {}
    orphans: dict[str, list[StoredFile]] = {}
    strays: list[str] = []
    for item in storage.files("jobs/"):
        job_id = job_of(item.key)
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
# detailed 1080x1920 clip at the cap. So the estimate takes 10 per pixel, with
# a floor for tiny pictures, where every frame's headers and index entries
# cost more than its pixels (a 16x16 picture at 60 fps), and copied AAC audio
# at up to 192 kb/s. It is an estimate, not a bound: a job whose pictures are
# all detail can still outgrow it, and a job that fills the disk after all
# fails with a clear error.
ESTIMATE_BITS_PER_PIXEL = 10
MIN_VIDEO_BITS_PER_SECOND = 100_000
AUDIO_BITS_PER_SECOND = 192_000
UNKNOWN_DURATION_SECONDS = 600  # jobs accepted before a source had to state its length


def estimate_output_bytes(duration: float, width: int, height: int, has_audio: bool) -> int:
    """About how large one variation of a width×height source of `duration` seconds will be."""
    out_w, out_h = fx.output_size(width, height)
    bits = max(MIN_VIDEO_BITS_PER_SECOND, ESTIMATE_BITS_PER_PIXEL * out_w * out_h)
    if has_audio:
        bits += AUDIO_BITS_PER_SECOND
    return int(duration * bits / 8)


def estimate_job_bytes(files: list[dict], variations_per_video: int) -> int:
    """The outputs of a job, from each source's duration and picture (its `media`)."""
    return variations_per_video * sum(
        estimate_output_bytes(
            f["duration"] or UNKNOWN_DURATION_SECONDS, f["media"]["width"], f["media"]["height"], f["media"]["hasAudio"]
        )
        for f in files
    )


def megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MB"


def make_room_for(store: Store, settings: Settings, job: dict, storage: Storage | None = None) -> str | None:
    """Before a job starts: evict finished jobs if its outputs would push the
    stored files over their limits; return a reason if they cannot fit, in
    which case nothing was evicted."""
    storage = storage or for_settings(settings)
    needed = estimate_job_bytes(store.get_job_files(job["id"]), job["variations_per_video"])
    used = _evict(store, settings, storage, needed)[1]
    room = settings.storage_limit_bytes - used
    if needed > room:
        return (
            f"not enough room under the storage limit of {settings.storage_limit_mb:g} MB "
            f"(STORAGE_LIMIT_MB) for this job: its outputs need about {megabytes(needed)}, more than "
            f"the limit leaves even with every finished job evicted"
        )
    free = storage.free_bytes()
    if free is not None and free < needed:
        return (
            f"not enough disk space for this job: its outputs need about {megabytes(needed)} "
            f"and only {megabytes(free)} are free"
        )
    return None


def run_cleanup(
    store: Store, settings: Settings, running: AbstractSet[str] = frozenset(), storage: Storage | None = None
) -> None:
    """One pass of the cleanup daemon."""
    storage = storage or for_settings(settings)
    started = time.monotonic()
    log.info("cleanup pass in process %d", os.getpid())
    expire_finished_jobs(store, settings, storage=storage)
    expire_uploads(store, settings, storage=storage)
    fail_stale_queued_jobs(store, settings)
    evict_for_space(store, settings, storage=storage)
    sweep_temporaries(store, settings, running, storage=storage)
    log.info("cleanup pass in process %d done in %.2f s", os.getpid(), time.monotonic() - started)
