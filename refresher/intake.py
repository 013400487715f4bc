"""Turning an upload into a queued job.

Uploaded files are streamed by Werkzeug's multipart parser straight into a
staging folder under DATA_DIR (never whole in memory, never outside DATA_DIR),
each capped at MAX_UPLOAD_MB from the first byte past the limit. Every file is
then probed with ffmpeg; only when all of them are readable MP4/MOV videos is
the job created — its files moved into the job's folder and its rows written
in one transaction. Whatever happens, the staging folder is removed when the
request ends, so a rejected request leaves nothing behind.

User-supplied file names never decide a path on disk: files are stored under
generated ids, and the names are only shown back, sanitized.
"""
from __future__ import annotations

import io
import logging
import os
import re
import secrets
import shutil
import time
import unicodedata
from pathlib import Path

from flask import Request, current_app
from werkzeug.exceptions import RequestEntityTooLarge

from . import lifecycle, store
from .api.errors import APIError
from .media import effects as fx
from .media import ffmpeg

log = logging.getLogger(__name__)

MAX_FILES = 10
MAX_VARIATIONS = 20
DEFAULT_VARIATIONS = 5
MAX_SEED_LENGTH = 128
MAX_NAME_LENGTH = 200
MAX_PIXELS = 7680 * 4320  # decoding larger frames would cost each ffmpeg gigabytes
STAGING_KEY = "refresher.staging"


# --- streaming the upload to disk ------------------------------------------------

class _CappedFile(io.BufferedRandom):
    """A staging file that refuses to grow past the per-file limit."""

    def __init__(self, path: Path, limit: int, filename: str | None):
        super().__init__(io.FileIO(path, "w+"))
        self.limit = limit
        self.written = 0
        self.filename = filename

    def write(self, data) -> int:
        self.written += len(data)
        if self.written > self.limit:
            limit_mb = current_app.config["SETTINGS"].max_upload_mb
            name = display_name(self.filename)
            raise RequestEntityTooLarge(f"{name} is larger than the limit of {limit_mb:g} MB (MAX_UPLOAD_MB)")
        return super().write(data)


class UploadRequest(Request):
    """Flask's request, with file parts written to DATA_DIR/incoming/<random>/."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        staging = self.environ.get(STAGING_KEY)
        if staging is None:
            settings = current_app.config["SETTINGS"]
            staging = lifecycle.incoming_dir(settings.data_dir) / secrets.token_hex(8)
            staging.mkdir(parents=True, exist_ok=True)
            self.environ[STAGING_KEY] = staging
        settings = current_app.config["SETTINGS"]
        path = staging / f"part{len(os.listdir(staging))}"
        return _CappedFile(path, settings.max_upload_bytes, filename)


def remove_staging(environ) -> None:
    staging = environ.pop(STAGING_KEY, None)
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)


# --- names shown back to people ------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNSAFE_IN_FILENAME = re.compile(r"[^\w.\- ]+", re.UNICODE)


def display_name(filename: str | None) -> str:
    """The base name a person gave the file, without any path, control
    characters or surrounding space; 'video.mp4' when nothing usable is left."""
    name = unicodedata.normalize("NFC", filename or "")
    name = re.split(r"[\\/]", name)[-1]
    name = _CONTROL.sub("", name).strip().strip(".").strip()
    name = " ".join(name.split())[:MAX_NAME_LENGTH]
    return name or "video.mp4"


def safe_stem(name: str) -> str:
    """A file-name-safe stem for output names and ZIP folders (unicode letters kept)."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = _UNSAFE_IN_FILENAME.sub("_", stem).replace(" ", "_").strip("._-")
    return stem[:80] or "video"


# --- the job ------------------------------------------------------------------------------

def parse_variations(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return DEFAULT_VARIATIONS
    raw = raw.strip()
    if not re.fullmatch(r"[0-9]{1,3}", raw) or not 1 <= int(raw) <= MAX_VARIATIONS:
        raise APIError(400, f"variations must be a whole number from 1 to {MAX_VARIATIONS}, got {raw[:20]!r}")
    return int(raw)


def parse_seed(raw: str | None) -> str:
    if raw is None or raw == "":
        return secrets.token_hex(6)
    if len(raw) > MAX_SEED_LENGTH or _CONTROL.search(raw):
        raise APIError(400, f"seed must be printable text of at most {MAX_SEED_LENGTH} characters")
    return raw


def accept_job(request: UploadRequest, conn) -> dict:
    """Validate the upload, create the job, return the 202 body."""
    settings = current_app.config["SETTINGS"]
    if store.count_unfinished_jobs(conn) >= settings.max_queued_jobs:
        raise APIError(503, f"the queue is full ({settings.max_queued_jobs} unfinished jobs); try again later",
                       retryAfter=30)
    if request.mimetype != "multipart/form-data":
        raise APIError(415, "send the videos as multipart/form-data in the 'videos' field")
    files = request.files  # parses the body, streaming files to the staging folder
    unexpected = sorted(set(files) - {"videos"})
    if unexpected:
        raise APIError(400, f"unexpected file field {unexpected[0][:40]!r}; send videos in the 'videos' field")
    uploads = [f for f in files.getlist("videos") if f.filename or getattr(f.stream, "written", 0)]
    if not uploads:
        raise APIError(400, "no files: send 1 to 10 MP4/MOV videos in the 'videos' field")
    if len(uploads) > MAX_FILES:
        raise APIError(400, f"too many files: {len(uploads)} sent, at most {MAX_FILES} per job")
    for field in ("variations", "seed"):
        if len(request.form.getlist(field)) > 1:
            raise APIError(400, f"{field} was sent more than once")
    variations = parse_variations(request.form.get("variations"))
    seed = parse_seed(request.form.get("seed"))

    binary = current_app.config["FFMPEG_BINARY"]
    accepted = []
    for upload in uploads:
        name = display_name(upload.filename)
        stream = upload.stream
        if not isinstance(stream, _CappedFile):
            raise APIError(400, f"{name} could not be read from the request", file=name)
        stream.flush()
        size, path = stream.written, Path(stream.raw.name)
        if size == 0:
            raise APIError(415, f"{name} is empty, not a readable MP4/MOV video", file=name)
        try:
            info = ffmpeg.probe(binary, path)
        except ffmpeg.ProbeError as exc:
            raise APIError(415, f"{name} {exc}; send MP4 or MOV videos", file=name) from None
        if info.width * info.height > MAX_PIXELS:
            raise APIError(415, f"{name} is {info.width}×{info.height}; videos up to 8K (7680×4320) are accepted",
                           file=name)
        accepted.append({"name": name, "size": size, "path": path, "info": info})

    return _create_job(conn, settings, binary, accepted, variations, seed)


def _create_job(conn, settings, binary: str, accepted: list[dict], variations: int, seed: str) -> dict:
    job_id = store.new_id()
    folder = lifecycle.job_dir(settings.data_dir, job_id)
    folder.mkdir(parents=True)
    try:
        now = time.time()
        files, rows = [], []
        all_effects = fx.draw_job_effects(seed, len(accepted), variations)
        for position, item in enumerate(accepted):
            file_id = store.new_id()
            upload_rel = f"jobs/{job_id}/source_{file_id}"
            os.replace(item["path"], settings.data_dir / upload_rel)
            files.append({"id": file_id, "position": position, "name": item["name"], "size": item["size"],
                          "upload_path": upload_rel, "duration": item["info"].duration,
                          "media": item["info"].as_dict()})
            stem = safe_stem(item["name"])
            for index, effects in enumerate(all_effects[position], start=1):
                variation_id = store.new_id()
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
        store.create_job(conn, {"id": job_id, "variations_per_video": variations, "seed": seed,
                                "thumbnail_path": thumbnail, "created_at": now,
                                "expires_at": now + settings.job_ttl_seconds}, files, rows)
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
