"""/api/jobs: create, list, inspect, follow, cancel, download and delete jobs."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from flask import Blueprint, Response, current_app, request, send_file, stream_with_context

from .. import archive, intake, lifecycle, store
from ..auth import token_auth
from ..db import get_conn
from ..engine.cancel_table import installed as installed_cancel_table
from .errors import APIError
from .serialize import job_detail, job_summary, iso

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")

CANCEL_SETTLE_TIMEOUT = 15.0     # > the q → SIGTERM → SIGKILL ladder (4 s) with room to spare
EVENTS_POLL_SECONDS = 0.5
EVENTS_KEEPALIVE_SECONDS = 15.0
EVENTS_MAX_SECONDS = 600.0
MAX_EVENT_STREAMS_PER_PROCESS = 24  # gunicorn runs 32 threads per worker
_event_streams = threading.BoundedSemaphore(MAX_EVENT_STREAMS_PER_PROCESS)


@bp.before_request
@token_auth.login_required
def require_token():
    """Every route here needs a bearer token."""


def _settings():
    return current_app.config["SETTINGS"]


def _job_or_404(job_id: str) -> dict:
    job = store.get_job(get_conn(), job_id) if len(job_id) <= 64 else None
    if job is None:
        raise APIError(404, f"no job with id {job_id[:64]!r}")
    return job


def load_detail(conn, job_id: str, job: dict | None = None) -> dict | None:
    job = job if job is not None else store.get_job(conn, job_id)
    if job is None:
        return None
    return job_detail(job, store.get_job_files(conn, job_id), store.get_job_variations(conn, job_id))


@bp.post("")
def create_job():
    body = intake.accept_job(request, get_conn())
    response = current_app.response_class(json.dumps(body), status=202, mimetype="application/json")
    response.headers["Location"] = body["statusUrl"]
    return response


@bp.get("")
def list_jobs():
    raw_limit = request.args.get("limit", "50")
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= 200:
        raise APIError(400, "limit must be a whole number from 1 to 200")
    status = request.args.get("status")
    if status is not None and status not in store.JOB_STATUSES:
        raise APIError(400, f"status must be one of {', '.join(store.JOB_STATUSES)}")
    rows = store.list_jobs(get_conn(), int(raw_limit), status)
    return [job_summary(r) for r in rows]


@bp.get("/<job_id>")
def get_job(job_id: str):
    return load_detail(get_conn(), job_id, _job_or_404(job_id))


@bp.get("/<job_id>/events")
def job_events(job_id: str):
    """Server-Sent Events: the job's JSON each time it changes, until it is final.

    Each open stream holds one thread of a gthread worker, mostly asleep; the
    number per worker is capped below its thread count so that status polls
    and uploads always find a free thread. A stream also ends after
    EVENTS_MAX_SECONDS; EventSource reconnects by itself."""
    _job_or_404(job_id)
    if not _event_streams.acquire(blocking=False):
        raise APIError(503, "too many live progress streams are open; poll GET /api/jobs/<id> instead",
                       retryAfter=5)
    db_path = _settings().db_path

    def stream():
        conn = store.connect(db_path)
        ends_at = time.monotonic() + EVENTS_MAX_SECONDS
        try:
            last, last_sent_at = None, time.monotonic()
            yield "retry: 2000\n\n"
            while time.monotonic() < ends_at:
                detail = load_detail(conn, job_id)
                if detail is None:
                    yield _sse({"jobId": job_id, "status": "deleted"}, event="deleted")
                    return
                encoded = json.dumps(detail, separators=(",", ":"))
                if encoded != last:
                    last, last_sent_at = encoded, time.monotonic()
                    yield f"data: {encoded}\n\n"
                    if detail["status"] in store.FINAL_JOB_STATUSES:
                        return
                elif time.monotonic() - last_sent_at > EVENTS_KEEPALIVE_SECONDS:
                    last_sent_at = time.monotonic()
                    yield ": keep-alive\n\n"
                time.sleep(EVENTS_POLL_SECONDS)
        finally:
            conn.close()

    response = Response(stream_with_context(stream()), mimetype="text/event-stream")
    response.call_on_close(_event_streams.release)  # the server always closes the response
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


@bp.post("/<job_id>/cancel")
def cancel_job(job_id: str):
    """Cancel; answer once the job has settled (no ffmpeg of it alive)."""
    job = _job_or_404(job_id)
    if job["status"] in store.FINAL_JOB_STATUSES:
        raise APIError(409, f"job {job_id} is already {job['status']}", status=job["status"])
    conn = get_conn()
    table = installed_cancel_table()
    if table is not None:
        table.request_cancel(job["seq"])  # the fast path to the running ffmpeg
    job = store.request_cancel(conn, job_id, time.time(), _settings().job_ttl_seconds)
    deadline = time.monotonic() + CANCEL_SETTLE_TIMEOUT
    while job is not None and job["status"] not in store.FINAL_JOB_STATUSES and time.monotonic() < deadline:
        time.sleep(0.02)
        job = store.get_job(conn, job_id)
    if job is None:
        raise APIError(404, f"job {job_id} was deleted")
    detail = load_detail(conn, job_id)
    body = {"jobId": job_id, "status": job["status"], "completedVariations": detail["completedVariations"],
            "totalVariations": detail["totalVariations"], "cancelledAt": iso(job["cancelled_at"]
                                                                            or job["cancel_requested_at"])}
    status = 200 if job["status"] in store.FINAL_JOB_STATUSES else 202
    return body, status


def _finished_or_409(job: dict, then: str) -> dict:
    if job["status"] in ("queued", "processing"):
        raise APIError(409, f"job {job['id']} is still {job['status']}; {then}", status=job["status"])
    return job


@bp.get("/<job_id>/download")
def download(job_id: str):
    job = _finished_or_409(_job_or_404(job_id), "download it when it has finished")
    if job["expires_at"] <= time.time():
        raise APIError(410, f"job {job_id} has expired and its files are gone")
    conn = get_conn()
    variations = store.get_job_variations(conn, job_id)
    if not any(v["status"] == "completed" for v in variations):
        raise APIError(404, f"job {job_id} has no outputs")
    zs = archive.build_zip(_settings().data_dir, job, store.get_job_files(conn, job_id), variations)
    response = Response(zs, mimetype="application/zip", direct_passthrough=True)
    response.headers["Content-Length"] = str(len(zs))
    response.headers["Content-Disposition"] = f'attachment; filename="refresher-{job_id}.zip"'
    return response


@bp.get("/<job_id>/outputs/<output_id>")
def output(job_id: str, output_id: str):
    _job_or_404(job_id)
    v = store.get_variation(get_conn(), output_id) if len(output_id) <= 64 else None
    if v is None or v["job_id"] != job_id or v["status"] != "completed":
        raise APIError(404, f"job {job_id} has no finished output {output_id[:64]!r}")
    path = Path(_settings().data_dir) / v["output_path"]
    if not path.is_file():
        raise APIError(404, f"output {output_id} is gone")
    as_attachment = request.args.get("download") in ("1", "true")
    return send_file(path, mimetype="video/mp4", conditional=True, download_name=v["name"],
                     as_attachment=as_attachment, max_age=3600)


@bp.get("/<job_id>/thumbnail")
def thumbnail(job_id: str):
    job = _job_or_404(job_id)
    path = Path(_settings().data_dir) / job["thumbnail_path"] if job["thumbnail_path"] else None
    if path is None or not path.is_file():
        raise APIError(404, f"job {job_id} has no thumbnail")
    return send_file(path, mimetype="image/webp", conditional=True, max_age=3600)


@bp.delete("/<job_id>")
def delete_job(job_id: str):
    _finished_or_409(_job_or_404(job_id), "cancel it before deleting it")
    lifecycle.delete_job_everywhere(get_conn(), _settings().data_dir, job_id)
    return "", 204
