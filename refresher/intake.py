"""Turning uploaded videos into a queued job.

The videos arrive already on disk, in a staging folder under DATA_DIR (see
`api/uploads.py`). Each is probed with ffmpeg; only when all of them are
readable MP4/MOV videos is the job created — its files moved into the job's
folder, a thumbnail taken, its rows written in one transaction under the
queue cap. Anything wrong is a `Rejected` naming the problem (and the file).

User-supplied file names never decide a path on disk: files are stored under
generated ids, and the names are only shown back, sanitized.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from config.settings import Settings

from . import lifecycle, limits
from .errors import Rejected
from .media import effects as fx
from .media import ffmpeg
from .names import has_invisible, safe_stem
from .store import QueueFull, Store, new_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Staged:
    """One uploaded video, on disk in the request's staging folder."""
    name: str      # as the person named it, sanitized
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
        return limits.DEFAULT_VARIATIONS
    raw = raw.strip()
    low, high = limits.MIN_VARIATIONS, limits.MAX_VARIATIONS
    if not re.fullmatch(r"[0-9]{1,3}", raw) or not low <= int(raw) <= high:
        raise Rejected(400, f"variations must be a whole number from {low} to {high}, got {raw[:20]!r}")
    return int(raw)


def parse_seed(raw: str | None) -> str:
    if raw is None or raw == "":
        return secrets.token_hex(6)
    if len(raw) > limits.MAX_SEED_LENGTH or has_invisible(raw):
        raise Rejected(400, f"seed must be printable text of at most {limits.MAX_SEED_LENGTH} characters")
    return raw


# --- the job ------------------------------------------------------------------------------

def accept_job(store: Store, settings: Settings, binary: str, staged: list[Staged],
               form: Mapping[str, list[str]]) -> dict:
    """Validate the upload, create the job, return the 202 body."""
    if not staged:
        raise Rejected(400, f"no files: send 1 to {limits.MAX_FILES} MP4/MOV videos in the 'videos' field")
    if len(staged) > limits.MAX_FILES:
        raise Rejected(400, f"too many files: {len(staged)} sent, at most {limits.MAX_FILES} per job")
    variations = parse_variations(_one(form, "variations"))
    seed = parse_seed(_one(form, "seed"))
    accepted = []
    for video in staged:
        if video.size == 0:
            raise Rejected(415, f"{video.name} is empty, not a readable MP4/MOV video", file=video.name)
        try:
            info = ffmpeg.probe(binary, video.path)
        except ffmpeg.ProbeError as exc:
            raise Rejected(415, f"{video.name} {exc}; send MP4 or MOV videos", file=video.name) from None
        if info.width * info.height > limits.MAX_PIXELS:
            raise Rejected(415, f"{video.name} is {info.width}×{info.height}; videos up to 8K (7680×4320) "
                                f"are accepted", file=video.name)
        accepted.append({"name": video.name, "size": video.size, "path": video.path, "info": info})
    return _create_job(store, settings, binary, accepted, variations, seed)


def _create_job(store: Store, settings: Settings, binary: str, accepted: list[dict], variations: int, seed: str) -> dict:
    job_id = new_id()
    folder = lifecycle.job_dir(settings.data_dir, job_id)
    folder.mkdir(parents=True)
    try:
        now = time.time()
        files, rows = [], []
        all_effects = fx.draw_job_effects(seed, len(accepted), variations)
        for position, item in enumerate(accepted):
            file_id = new_id()
            upload_rel = f"jobs/{job_id}/source_{file_id}"
            os.replace(item["path"], settings.data_dir / upload_rel)
            files.append({"id": file_id, "position": position, "name": item["name"], "size": item["size"],
                          "upload_path": upload_rel, "duration": item["info"].duration,
                          "media": item["info"].as_dict()})
            stem = safe_stem(item["name"])
            for index, effects in enumerate(all_effects[position], start=1):
                variation_id = new_id()
                short = secrets.token_hex(2)
                info = item["info"]
                rows.append({"id": variation_id, "file_id": file_id, "variation_index": index,
                             "effects": effects, "name": f"{stem}_var{index}_{short}.mp4",
                             "output_path": f"jobs/{job_id}/{variation_id}.mp4",
                             "est_cost": fx.estimated_cost(effects, info.width, info.height, info.duration)})
        thumbnail = f"jobs/{job_id}/thumbnail.webp"
        try:
            ffmpeg.make_thumbnail(binary, settings.data_dir / files[0]["upload_path"],
                                  settings.data_dir / thumbnail, files[0]["duration"])
        except (RuntimeError, OSError) as exc:
            log.warning("no thumbnail for job %s: %s", job_id, exc)
            thumbnail = None
        try:
            store.create_job({"id": job_id, "variations_per_video": variations, "seed": seed,
                              "thumbnail_path": thumbnail, "created_at": now,
                              "expires_at": now + settings.job_ttl_seconds}, files, rows,
                             max_unfinished=settings.max_queued_jobs)
        except QueueFull:
            raise Rejected(503, f"the queue is full ({settings.max_queued_jobs} unfinished jobs); "
                                f"try again later", retryAfter=30) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info("job %s queued: %d file(s) × %d variation(s)", job_id, len(files), variations)
    return {
        "jobId": job_id, "status": "queued", "variationsPerVideo": variations,
        "totalVariations": len(rows), "seed": seed,
        "files": [{"id": f["id"], "name": f["name"], "size": f["size"]} for f in files],
        "statusUrl": f"/api/jobs/{job_id}",
    }
