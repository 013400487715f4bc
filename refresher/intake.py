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
from .media.slots import ProbeSlots
from .names import clean_job_name, has_invisible, name_from_files, safe_stem
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


def parse_name(raw) -> str | None:
    """The job's name, or None when none was given (it is then named after its files)."""
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    name = clean_job_name(raw)
    if name is None:
        raise Rejected(400, f"name must be {limits.MIN_JOB_NAME_LENGTH} to {limits.MAX_JOB_NAME_LENGTH} "
                            f"printable characters, e.g. \"Spring sale\"")
    return name


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
    name = parse_name(_one(form, "name"))
    slots = ProbeSlots(settings.data_dir / "run")
    accepted = []
    for video in staged:
        if video.size == 0:
            raise Rejected(415, f"{video.name} is empty, not a readable MP4/MOV video", file=video.name)
        try:
            with slots.hold():
                info = ffmpeg.probe(binary, video.path)
        except ffmpeg.PictureTooLarge as exc:
            raise Rejected(415, f"{video.name} {exc}", file=video.name) from None
        except ffmpeg.ProbeError as exc:
            raise Rejected(415, f"{video.name} {exc}; send MP4 or MOV videos", file=video.name) from None
        _check_duration(video.name, info.duration, settings.max_duration_seconds)
        accepted.append({"name": video.name, "size": video.size, "path": video.path, "info": info})
    _check_storage(settings, accepted, variations)
    return _create_job(store, settings, binary, slots, accepted, variations, seed, name)


def _check_duration(name: str, duration: float | None, longest: float) -> None:
    """Encoding costs CPU in proportion to a source's length, whatever its size
    in bytes (ten minutes of a still picture fit in 17 KB), so the length is capped."""
    if duration is None:
        raise Rejected(415, f"{name} does not say how long it is; send MP4 or MOV videos", file=name)
    if duration > longest:
        shown = f"{duration:.0f}" if round(duration) > longest else f"{duration:.2f}"  # never "300 s; at most 300 s"
        raise Rejected(400, f"{name} is {shown} s long; the longest accepted is {longest:g} s "
                            f"(MAX_DURATION_SECONDS)", file=name)


def _check_storage(settings: Settings, accepted: list[dict], variations: int) -> None:
    """A job whose sources and outputs alone would not fit under STORAGE_LIMIT_MB
    is refused now, rather than failing later (and evicting nothing for it)."""
    outputs = lifecycle.estimate_job_bytes(
        [{"duration": item["info"].duration, "media": item["info"].as_dict()} for item in accepted], variations)
    needed = outputs + sum(item["size"] for item in accepted)
    if needed > settings.storage_limit_bytes:
        raise Rejected(413, f"this job needs about {lifecycle.megabytes(needed)} (its videos and their variations), "
                            f"more than the storage limit of {settings.storage_limit_mb:g} MB "
                            f"(STORAGE_LIMIT_MB); send fewer variations or shorter videos")


def _create_job(store: Store, settings: Settings, binary: str, slots: ProbeSlots, accepted: list[dict],
                variations: int, seed: str, name: str | None, bring=os.replace) -> dict:
    """Write the job: each source is brought into the job's folder with
    `bring(from, to)` (moved from the staging folder, or linked from another job)."""
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
            bring(item["path"], settings.data_dir / upload_rel)
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
            with slots.hold():
                ffmpeg.make_thumbnail(binary, settings.data_dir / files[0]["upload_path"],
                                      settings.data_dir / thumbnail, files[0]["duration"])
        except (RuntimeError, OSError) as exc:
            log.warning("no thumbnail for job %s: %s", job_id, exc)
            thumbnail = None
        try:
            store.create_job({"id": job_id, "name": name, "variations_per_video": variations, "seed": seed,
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
        "jobId": job_id, "name": name or name_from_files([f["name"] for f in files]),
        "status": "queued", "variationsPerVideo": variations,
        "totalVariations": len(rows), "seed": seed,
        "files": [{"id": f["id"], "name": f["name"], "size": f["size"]} for f in files],
        "statusUrl": f"/api/jobs/{job_id}",
    }


# --- run again --------------------------------------------------------------------------------

def link_or_copy(source: Path, target: Path) -> None:
    """A hard link when the file system allows one (no second copy on disk),
    else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _can_link(source: Path, folder: Path) -> bool:
    trial = folder / f".link-check-{secrets.token_hex(4)}"
    try:
        os.link(source, trial)
    except OSError:
        return False
    trial.unlink(missing_ok=True)
    return True


def parse_rerun(body, original: dict) -> tuple[int, str, str | None]:
    """variations, seed and name of a rerun: from the JSON body, else the
    original's variations and name and a new seed."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise Rejected(400, "send a JSON object, e.g. {\"seed\": \"summer\", \"variations\": 3}, or nothing")
    unexpected = sorted(set(body) - {"seed", "name", "variations"})
    if unexpected:
        raise Rejected(400, f"unexpected field {unexpected[0][:40]!r}; a rerun takes seed, name and variations")
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
        raise Rejected(400, f"seed must be printable text of at most {limits.MAX_SEED_LENGTH} characters")
    seed = parse_seed(raw_seed)
    name = parse_name(body["name"]) if "name" in body else original["name"]
    return variations, seed, name


def rerun_job(store: Store, settings: Settings, binary: str, original: dict, files: list[dict],
              body) -> dict:
    """A new job from the sources of `original` (which must still be on disk),
    with a new seed or the one given: the sources are hard-linked into the
    new job's folder, or copied where a link is not possible."""
    variations, seed, name = parse_rerun(body, original)
    sources = [settings.data_dir / f["upload_path"] for f in files]
    if not _can_link(sources[0], sources[0].parent):  # (the sweep removes a trial left by a crash)
        needed = sum(path.stat().st_size for path in sources)
        if lifecycle.free_bytes(settings.data_dir) < needed:
            raise Rejected(507, f"the server's disk is full: the sources need {needed / 1e6:.0f} MB; "
                                f"try again later or ask for space to be freed")
    slots = ProbeSlots(settings.data_dir / "run")
    accepted = []
    for f, path in zip(files, sources):
        try:
            with slots.hold():
                info = ffmpeg.probe(binary, path)
        except ffmpeg.ProbeError as exc:
            raise Rejected(410, f"the source {f['name']} of job {original['id']} cannot be read any more: "
                                f"{exc}") from None
        accepted.append({"name": f["name"], "size": f["size"], "path": path, "info": info})
    _check_storage(settings, accepted, variations)
    return _create_job(store, settings, binary, slots, accepted, variations, seed, name, bring=link_or_copy)
