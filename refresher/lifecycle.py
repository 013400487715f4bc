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

from .store import Store

log = logging.getLogger(__name__)

DISK_FULL_FRACTION = 0.85
ORPHAN_AGE_SECONDS = 600  # an upload being accepted right now is younger than this


def job_dir(data_dir: Path, job_id: str) -> Path:
    return data_dir / "jobs" / job_id


def incoming_dir(data_dir: Path) -> Path:
    return data_dir / "incoming"


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


def directory_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def disk_too_full(path: Path) -> bool:
    usage = shutil.disk_usage(path)
    return usage.used / usage.total > DISK_FULL_FRACTION


def evict_for_space(store: Store, settings: Settings, extra_needed: int = 0) -> list[str]:
    """Delete the oldest finished jobs until DATA_DIR (plus `extra_needed` bytes
    about to be written) is under STORAGE_LIMIT_MB and the disk under 85 % full.
    Queued and running jobs are never touched."""
    evicted = []
    used = directory_size(settings.data_dir)
    for job in store.finished_jobs_oldest_first():
        if used + extra_needed <= settings.storage_limit_bytes and not disk_too_full(settings.data_dir) \
                and free_bytes(settings.data_dir) >= extra_needed:
            break
        size = directory_size(job_dir(settings.data_dir, job["id"]))
        delete_job_everywhere(store, settings.data_dir, job["id"])
        used -= size
        evicted.append(job["id"])
    if evicted:
        log.warning("evicted %d finished job(s) to free space", len(evicted))
    return evicted


def sweep_temporaries(store: Store, settings: Settings, running: set[str] = frozenset(),
                      min_age: float = ORPHAN_AGE_SECONDS) -> list[Path]:
    """Remove files no row owns: partial outputs (except those of `running`
    variation ids), folders of deleted jobs, abandoned uploads. Anything younger
    than `min_age` that might belong to an upload in progress is left alone."""
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
    incoming = incoming_dir(data_dir)
    if incoming.is_dir():
        for entry in incoming.iterdir():
            if now - entry.stat().st_mtime > min_age:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                removed.append(entry)
    if removed:
        log.info("swept %d stray file(s)", len(removed))
    return removed


# What an output of ordinary footage takes at the encoder's CRF: about
# 2.5 Mb/s of video at 720p (bench/quality.py: 1.8 Mb/s at 640x360, 4.2 Mb/s
# for a low-bitrate 1280x720 source), + 128 kb/s audio; with room for the
# moov rewrite of +faststart and a margin. It is an estimate, not a bound:
# the encoder's cap grows with the picture (24.9 Mb/s at 1080x1920), and a
# job that fills the disk after all fails with a clear error.
OUTPUT_BYTES_PER_SECOND = (2_500_000 + 128_000) / 8
SPACE_MARGIN = 1.5
UNKNOWN_DURATION_SECONDS = 600


def estimate_job_bytes(files: list[dict], variations_per_video: int) -> int:
    seconds = sum((f["duration"] or UNKNOWN_DURATION_SECONDS) for f in files)
    return int(seconds * variations_per_video * OUTPUT_BYTES_PER_SECOND * SPACE_MARGIN)


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def make_room_for(store: Store, settings: Settings, job: dict) -> str | None:
    """Before a job starts: evict finished jobs if its outputs would push the
    data directory over its limits; return a reason if the disk cannot hold them."""
    needed = estimate_job_bytes(store.get_job_files(job["id"]), job["variations_per_video"])
    if free_bytes(settings.data_dir) < needed or \
            directory_size(settings.data_dir) + needed > settings.storage_limit_bytes:
        evict_for_space(store, settings, extra_needed=needed)
    free = free_bytes(settings.data_dir)
    if free < needed:
        return (f"not enough disk space for this job: its outputs need about {needed / 1e6:.0f} MB "
                f"and only {free / 1e6:.0f} MB are free")
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
