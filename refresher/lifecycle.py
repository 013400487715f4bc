"""Housekeeping that keeps DATA_DIR bounded: expiry, eviction, stuck jobs and
the sweep of temporaries. The supervisor runs these from APScheduler (and the
sweep once at start); nothing here runs in a web worker except `remove_job_files`,
which `DELETE /api/jobs/<id>` shares.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from config.settings import Settings

from . import spool
from .media import effects as fx
from .store import Store

log = logging.getLogger(__name__)

DISK_FULL_FRACTION = 0.85
ORPHAN_AGE_SECONDS = 600  # a job folder being created right now is younger than this


def job_dir(data_dir: Path, job_id: str) -> Path:
    return data_dir / "jobs" / job_id


def remove_job_files(data_dir: Path, job_id: str) -> None:
    shutil.rmtree(job_dir(data_dir, job_id), ignore_errors=True)


def delete_job_everywhere(store: Store, data_dir: Path, job_id: str) -> None:
    """Rows first, then files: a crash in between leaves only files, which the sweep removes."""
    store.delete_job(job_id)
    remove_job_files(data_dir, job_id)


def expire_finished_jobs(store: Store, settings: Settings, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    expired = [job["id"] for job in store.expired_jobs(now)]
    for job_id in expired:
        delete_job_everywhere(store, settings.data_dir, job_id)
    if expired:
        log.info("expired %d finished job(s)", len(expired))
    return expired


def fail_stale_queued_jobs(store: Store, settings: Settings, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    failed = []
    for job in store.stale_queued_jobs(now):
        if store.fail_queued_job(job["id"], "the job waited in the queue past its expiry and was not started",
                                 now, settings.job_ttl_seconds):
            failed.append(job["id"])
    if failed:
        log.warning("failed %d job(s) that stayed queued past expiry", len(failed))
    return failed


def _files(path: Path):
    """os.lstat of every file under `path` (one deleted meanwhile is skipped)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                yield os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue


def directory_size(path: Path) -> int:
    """Bytes on disk under `path`; a file hard-linked twice (the sources of a
    rerun) counts once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for info in _files(path):
        if info.st_nlink > 1:
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
        total += info.st_size
    return total


def bytes_freed_by_removing(path: Path) -> int:
    """What deleting `path` gives back: files linked from elsewhere too (a
    rerun's sources) stay on disk."""
    return sum(info.st_size for info in _files(path) if info.st_nlink == 1)


def disk_too_full(path: Path) -> bool:
    usage = shutil.disk_usage(path)
    return usage.used / usage.total > DISK_FULL_FRACTION


def evict_for_space(store: Store, settings: Settings, extra_needed: int = 0) -> list[str]:
    """Delete the oldest finished jobs, only as many as it takes for DATA_DIR
    (plus `extra_needed` bytes about to be written) to be under
    STORAGE_LIMIT_MB, for `extra_needed` bytes to be free, and for the disk to
    be under 85 % full. When deleting every finished job would still leave no
    room for `extra_needed`, nothing is deleted: eviction never makes room for
    what cannot fit anyway. Queued and running jobs are never touched."""
    data_dir = settings.data_dir
    finished = [(job["id"], bytes_freed_by_removing(job_dir(data_dir, job["id"])))
                for job in store.finished_jobs_oldest_first()]
    used = directory_size(data_dir)
    if extra_needed and _room_lacking(settings, used, extra_needed) > sum(size for _, size in finished):
        return []
    evicted = []
    for job_id, size in finished:
        if _room_lacking(settings, used, extra_needed) <= 0 and not disk_too_full(data_dir):
            break
        delete_job_everywhere(store, data_dir, job_id)
        used -= size
        evicted.append(job_id)
    if evicted:
        log.warning("evicted %d finished job(s) to free space", len(evicted))
    return evicted


def _room_lacking(settings: Settings, used: int, extra_needed: int) -> int:
    """Bytes to delete before `extra_needed` more fit under STORAGE_LIMIT_MB and on the disk."""
    return max(used + extra_needed - settings.storage_limit_bytes, extra_needed - free_bytes(settings.data_dir))


def sweep_temporaries(store: Store, settings: Settings, running: set[str] = frozenset(),
                      min_age: float = ORPHAN_AGE_SECONDS) -> list[Path]:
    """Remove files no row owns: partial outputs (except those of `running`
    variation ids), folders of deleted jobs, uploads no request holds any more.
    Anything under jobs/ younger than `min_age` may belong to a job being
    created: it is left alone."""
    removed: list[Path] = []
    data_dir = settings.data_dir
    now = time.time()
    known_jobs = store.all_job_ids()
    jobs_root = data_dir / "jobs"
    if jobs_root.is_dir():
        for folder in jobs_root.iterdir():
            if folder.name not in known_jobs:
                if now - folder.stat().st_mtime > min_age:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
                continue
            owned = store.known_paths(folder.name)
            for path in folder.rglob("*"):
                if not path.is_file():
                    continue
                relative = path.relative_to(data_dir).as_posix()
                if relative in owned:
                    continue
                variation_id = path.name.split(".", 1)[0]
                if variation_id in running:
                    continue
                if ".part." in path.name or now - path.stat().st_mtime > min_age:
                    path.unlink(missing_ok=True)
                    removed.append(path)
    removed += spool.remove_abandoned(data_dir)
    if removed:
        log.info("swept %d stray file(s)", len(removed))
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
        estimate_output_bytes(f["duration"] or UNKNOWN_DURATION_SECONDS, f["media"]["width"], f["media"]["height"],
                              f["media"]["hasAudio"])
        for f in files)


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MB"


def make_room_for(store: Store, settings: Settings, job: dict) -> str | None:
    """Before a job starts: evict finished jobs if its outputs would push the
    data directory over its limits; return a reason if they cannot fit, in
    which case nothing was evicted."""
    needed = estimate_job_bytes(store.get_job_files(job["id"]), job["variations_per_video"])
    evict_for_space(store, settings, extra_needed=needed)
    room = settings.storage_limit_bytes - directory_size(settings.data_dir)
    if needed > room:
        return (f"not enough room under the storage limit of {settings.storage_limit_mb:g} MB "
                f"(STORAGE_LIMIT_MB) for this job: its outputs need about {megabytes(needed)}, more than "
                f"the limit leaves even with every finished job evicted")
    free = free_bytes(settings.data_dir)
    if free < needed:
        return (f"not enough disk space for this job: its outputs need about {megabytes(needed)} "
                f"and only {megabytes(free)} are free")
    return None


def run_cleanup(store: Store, settings: Settings, running: set[str] = frozenset()) -> None:
    """One pass of the cleanup daemon."""
    started = time.monotonic()
    log.info("cleanup pass in process %d", os.getpid())
    expire_finished_jobs(store, settings)
    fail_stale_queued_jobs(store, settings)
    evict_for_space(store, settings)
    sweep_temporaries(store, settings, running)
    log.info("cleanup pass in process %d done in %.2f s", os.getpid(), time.monotonic() - started)
