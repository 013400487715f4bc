"""The two pages people use: the upload form with the jobs list, and one job.

Each page is rendered with its data embedded as JSON (Jinja's `tojson`
escapes it for HTML), so it shows at once; the page's script then keeps it
live through the API.
"""

from __future__ import annotations

from flask import render_template

from .. import jobs, contract
from ..extensions import refresher
from . import bp
from .signin import signin_required

JOBS_SHOWN = 50


@bp.after_request
def keep_pages_private(response):
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


# strict_slashes=False: an empty path (a request for "http://host" in
# absolute form) is this page, not werkzeug's redirect to an absolute URL
# built from the Host header.
@bp.get("/", strict_slashes=False)
@signin_required
def index():
    service = refresher()
    settings = service.settings
    shown = jobs.summaries(service.store, JOBS_SHOWN)
    form_limits = {
        "maxFiles": contract.MAX_FILES,
        "maxFileBytes": settings.max_upload_bytes,
        "maxVariations": contract.MAX_VARIATIONS,
        "defaultVariations": contract.DEFAULT_VARIATIONS,
        "maxSeedLength": contract.MAX_SEED_LENGTH,
        "maxNameLength": contract.MAX_JOB_NAME_LENGTH,
    }
    return render_template(
        "index.html",
        jobs=shown,
        limits=form_limits,
        max_upload_mb=settings.max_upload_mb,
        job_ttl_hours=settings.job_ttl_hours,
    )


@bp.get("/jobs/<job_id>")
@signin_required
def job_page(job_id: str):
    service = refresher()
    job = jobs.detail(service.store, job_id)
    if job is None:
        return render_template(
            "message.html",
            title="Job not found",
            message="This job does not exist any more: it was deleted, or its results expired.",
        ), 404
    return render_template(
        "job.html",
        job=job,
        title=job["name"],
        max_name_length=contract.MAX_JOB_NAME_LENGTH,
        max_variations=contract.MAX_VARIATIONS,
        max_seed_length=contract.MAX_SEED_LENGTH,
        waiting_for_host=job["status"] == "queued"
        and jobs.no_encoding_host(service.store, service.settings.host_timeout_seconds),
    )
