"""/api/jobs: create, list, inspect, follow, cancel, download and delete jobs."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable

from flask import Blueprint, Response, current_app, redirect, request, send_file, stream_with_context
from werkzeug.wrappers import Response as BaseResponse  # flask's redirect() gives one

from .. import archive, auth, intake, jobs, contract, resumable, rules, transfers
from ..auth import token_auth
from ..errors import Rejected
from ..extensions import refresher
from ..storage import FileOnDisk
from . import uploads

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")

EVENTS_POLL_SECONDS = 0.5
EVENTS_KEEPALIVE_SECONDS = 15.0
EVENTS_MAX_SECONDS = 600.0
EVENTS_RECHECK_SECONDS = 2.0  # how often a stream checks that its token still works
MAX_EVENT_STREAMS_PER_PROCESS = 24  # gunicorn runs 32 threads per worker
_event_streams = threading.BoundedSemaphore(MAX_EVENT_STREAMS_PER_PROCESS)
JSON_BODY_LIMIT = 64 * 1024
FILE_MAX_AGE = 3600  # seconds a browser may reuse an output or thumbnail without asking


@bp.before_request
@token_auth.login_required
def require_token():
    """Every route here needs a bearer token."""


@bp.post("")
def create_job():
    service = refresher()
    # Before a byte of the body is read: a full queue costs the client nothing.
    # (The cap is checked again, atomically, when the job is written.)
    intake.check_queue(service.store, service.settings)
    if request.is_json:
        body = resumable.make_job(service.store, service.settings, service.storage, service.ffmpeg, _json_body())
        jobs.work_queued(service.control)
        return _accepted(body)
    staged, form = uploads.staged_videos()
    body = intake.accept_job(
        service.store, service.settings, service.storage, service.ffmpeg, staged, form, early=uploads.early_intake()
    )
    jobs.work_queued(service.control)
    response = current_app.response_class(json.dumps(body), status=202, mimetype="application/json")
    response.headers["Location"] = body["statusUrl"]
    return response


@bp.get("")
def list_jobs():
    raw_limit = request.args.get("limit", str(contract.DEFAULT_LIST_LIMIT))
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= contract.MAX_LIST_LIMIT:
        raise Rejected(400, f"limit must be a whole number from 1 to {contract.MAX_LIST_LIMIT}")
    status = request.args.get("status")
    if status is not None and status not in rules.JOB_STATUSES:
        raise Rejected(400, f"status must be one of {', '.join(rules.JOB_STATUSES)}")
    return jobs.summaries(refresher().store, int(raw_limit), status)


@bp.get("/<job_id>")
def get_job(job_id: str):
    return jobs.find_detail(refresher().store, job_id)


@bp.get("/<job_id>/events")
def job_events(job_id: str):
    """Server-Sent Events: the job's JSON each time it changes, until it is final.

    Each open stream holds one thread of a gthread worker, mostly asleep; the
    number per worker is capped below its thread count so that status polls
    and uploads always find a free thread, and one client holds at most
    STREAMS_PER_CLIENT of them. A stream ends within EVENTS_RECHECK_SECONDS
    of its token being signed out or revoked, and after EVENTS_MAX_SECONDS
    in any case; EventSource reconnects by itself."""
    service = refresher()
    store = service.store
    caller = token_auth.current_user()
    jobs.find_job(store, job_id)
    release = service.streams.take(auth.caller_key(caller))
    if release is None:
        raise Rejected(
            429,
            f"this client already has {transfers.STREAMS_PER_CLIENT} live progress streams open, the most one "
            "client may; close one, or poll GET /api/jobs/<id>",
            retryAfter=5,
        )
    if not _event_streams.acquire(blocking=False):
        release()
        raise Rejected(503, "too many live progress streams are open; poll GET /api/jobs/<id> instead", retryAfter=5)

    def stream():
        ends_at = time.monotonic() + EVENTS_MAX_SECONDS
        last, last_sent_at = None, time.monotonic()
        checked_at = time.monotonic()
        yield "retry: 2000\n\n"
        while time.monotonic() < ends_at:
            if time.monotonic() - checked_at >= EVENTS_RECHECK_SECONDS:
                checked_at = time.monotonic()
                if not auth.still_signed_in(caller):
                    yield _sse({"error": "signed out: this token no longer works"}, event="signed-out")
                    return
            detail = jobs.detail(store, job_id)
            if detail is None:
                yield _sse({"jobId": job_id, "status": "deleted"}, event="deleted")
                return
            encoded = json.dumps(detail, separators=(",", ":"))
            if encoded != last:
                last, last_sent_at = encoded, time.monotonic()
                yield f"data: {encoded}\n\n"
                if detail["status"] in rules.FINAL:
                    return
            elif time.monotonic() - last_sent_at > EVENTS_KEEPALIVE_SECONDS:
                last_sent_at = time.monotonic()
                yield ": keep-alive\n\n"
            time.sleep(EVENTS_POLL_SECONDS)

    response = Response(stream_with_context(stream()), mimetype="text/event-stream")
    response.call_on_close(_event_streams.release)  # the server always closes the response
    response.call_on_close(release)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


@bp.post("/<job_id>/cancel")
def cancel_job(job_id: str):
    """Cancel; answer once the job has settled (no ffmpeg of it alive)."""
    service = refresher()
    answer, settled = jobs.cancel_job(service.store, service.control, job_id, service.settings.job_ttl_seconds)
    return answer, 200 if settled else 202


def _json_body():
    """A small JSON body (a job from resumable uploads names them; the bytes came before)."""
    if (request.content_length or 0) > JSON_BODY_LIMIT:
        raise Rejected(413, f"the JSON body is too large: at most {JSON_BODY_LIMIT // 1024} KB")
    raw = request.stream.read(JSON_BODY_LIMIT + 1)
    if len(raw) > JSON_BODY_LIMIT:
        raise Rejected(413, f"the JSON body is too large: at most {JSON_BODY_LIMIT // 1024} KB")
    try:
        return json.loads(raw)
    except ValueError:
        raise Rejected(400, "the body is not valid JSON") from None


def _accepted(body: dict):
    response = current_app.response_class(json.dumps(body), status=202, mimetype="application/json")
    response.headers["Location"] = f"/api/jobs/{body['jobId']}"
    return response


@bp.post("/<job_id>/retry")
def retry_job(job_id: str):
    """Queue a finished job's failed variations again, with their recorded effects."""
    service = refresher()
    return _accepted(
        jobs.reopen_job(service.store, service.control, service.storage, job_id, "retry", service.settings)
    )


@bp.post("/<job_id>/resume")
def resume_job(job_id: str):
    """Make the variations a cancel left unmade, with the same seed and effects."""
    service = refresher()
    return _accepted(
        jobs.reopen_job(service.store, service.control, service.storage, job_id, "resume", service.settings)
    )


@bp.post("/<job_id>/rerun")
def rerun_job(job_id: str):
    """A new job from the same sources, with a new seed (or the one given)."""
    service = refresher()
    original = jobs.find_job(service.store, job_id)
    files = jobs.stored_sources(service.storage, service.store, original)
    body = None
    if request.get_data():
        if not request.is_json:
            raise Rejected(415, 'send the options as JSON, e.g. {"seed": "summer", "variations": 3}')
        try:
            body = json.loads(request.get_data())
        except ValueError:
            raise Rejected(400, "the body is not valid JSON") from None
    intake.check_queue(service.store, service.settings)
    created = intake.rerun_job(service.store, service.settings, service.storage, original, files, body)
    jobs.work_queued(service.control)
    body = {**jobs.find_detail(service.store, created["jobId"]), "statusUrl": created["statusUrl"]}
    return _accepted(body)


def _a_download(what: Callable[..., str]):
    """A route whose answer may send a file from here: it is one of the few
    downloads its client may run at once (else 429, before any other work),
    and it is cut off if read too slowly (transfers.py). `what` names it in
    the log, from the route's arguments."""

    def wrap(view):
        @functools.wraps(view)
        def download_route(**kwargs):
            if request.method != "GET":
                return view(**kwargs)
            service = refresher()
            release = service.downloads.take(auth.caller_key(token_auth.current_user()))
            if release is None:
                limit = service.settings.downloads_per_client
                raise Rejected(
                    429,
                    f"this client already runs {limit} downloads at once, the most one client may "
                    "(DOWNLOADS_PER_CLIENT); try again when one has finished",
                    retryAfter=10,
                )
            try:
                response = view(**kwargs)
            except BaseException:
                release()
                raise
            if response.status_code not in (200, 206) or not response.direct_passthrough:
                release()  # nothing sent from here: a redirect to the storage, a 304
                return response
            sock = request.environ.get("gunicorn.socket")
            response.response = service.slow_readers.paced(response.response, sock, what(**kwargs), release)
            return response

        return download_route

    return wrap


@bp.get("/<job_id>/download")
@_a_download(lambda job_id: f"the ZIP of job {job_id}")
def download(job_id: str):
    service = refresher()
    job = jobs.finished_job(service.store, job_id, "download it when it has finished")
    if job["expires_at"] <= time.time():
        raise Rejected(410, f"job {job_id} has expired and its files are gone")
    variations = service.store.get_job_variations(job_id)
    if not any(v["status"] == "completed" for v in variations):
        raise Rejected(404, f"job {job_id} has no outputs")
    zs = archive.build_zip(service.storage, job, service.store.get_job_files(job_id), variations)
    response = Response(zs, mimetype="application/zip", direct_passthrough=True)
    response.headers["Content-Length"] = str(len(zs))
    response.headers["Content-Disposition"] = archive.content_disposition(job)
    return _private(response)


@bp.get("/<job_id>/outputs/<output_id>")
@_a_download(lambda job_id, output_id: f"output {output_id} of job {job_id}")
def output(job_id: str, output_id: str):
    service = refresher()
    jobs.find_job(service.store, job_id)
    v = service.store.get_variation(output_id) if len(output_id) <= contract.MAX_ID_LENGTH else None
    if v is None or v["job_id"] != job_id or v["status"] != "completed":
        raise Rejected(404, f"job {job_id} has no finished output {output_id[: contract.MAX_ID_LENGTH]!r}")
    as_attachment = request.args.get("download") in ("1", "true")
    response = _send_stored(
        service.storage, v["output_path"], mimetype="video/mp4", download_name=v["name"], as_attachment=as_attachment
    )
    if response is None:
        raise Rejected(404, f"output {output_id} is gone")
    return _private(response)


@bp.get("/<job_id>/thumbnail")
def thumbnail(job_id: str):
    service = refresher()
    job = jobs.find_job(service.store, job_id)
    response = None
    if job["thumbnail_path"]:
        response = _send_stored(service.storage, job["thumbnail_path"], mimetype="image/webp")
    if response is None:
        raise Rejected(404, f"job {job_id} has no thumbnail")
    return _private(response)


def _send_stored(
    storage, key: str, *, mimetype: str, download_name: str | None = None, as_attachment: bool = False
) -> BaseResponse | None:
    """The stored file as an answer: sent from this host's disk (Range
    requests answered, so a <video> can seek), or a 302 to the link the
    storage gives (its bytes never pass through here); None if it is gone."""
    where = storage.locate(key, mimetype=mimetype, download_name=download_name, as_attachment=as_attachment)
    if where is None:
        return None
    if isinstance(where, FileOnDisk):
        return send_file(
            where.path,
            mimetype=mimetype,
            conditional=True,
            download_name=download_name,
            as_attachment=as_attachment,
            max_age=FILE_MAX_AGE,
        )
    response = redirect(where.url, code=302)
    # the link expires: a browser may reuse it for a short while only
    response.cache_control.max_age = min(FILE_MAX_AGE, where.expires_in // 5)
    return response


def _private(response: BaseResponse) -> BaseResponse:
    """Files that only a signed-in caller may fetch: a browser may keep them
    (an output never changes), a shared cache or proxy never, and what was
    fetched with one token or cookie is never replayed for another."""
    response.cache_control.public = False
    response.cache_control.private = True
    response.vary.update(("Authorization", "Cookie"))
    return response


@bp.delete("/<job_id>")
def delete_job(job_id: str):
    service = refresher()
    jobs.delete_job(service.store, service.storage, job_id)
    return "", 204
