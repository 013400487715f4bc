"""The JSON shapes of jobs and API tokens, as the HTTP contract defines them
(GET /api/openapi.json): the API
answers with them, the web pages embed them, the CLI prints them."""

from __future__ import annotations

from datetime import UTC, datetime

from .names import name_from_files, strip_invisible
from .rules import FINAL


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC with a trailing Z."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _file_status(job: dict, variations: list[dict]) -> str:
    statuses = {v["status"] for v in variations}
    if "processing" in statuses:
        return "processing"
    if "queued" in statuses:
        return "processing" if job["status"] == "processing" and statuses - {"queued"} else "queued"
    if statuses == {"completed"}:
        return "completed"
    if "cancelled" in statuses:
        return "cancelled"
    if "completed" in statuses:
        return "completed"  # some failed; the file's error says which
    return "failed"


def _file_error(variations: list[dict]) -> str | None:
    failed = [v for v in variations if v["status"] == "failed"]
    if not failed:
        return None
    reason = failed[0]["error"] or "the encode failed"
    if len(failed) == len(variations):
        return reason
    return f"{len(failed)} of {len(variations)} variations failed: {reason}"


def _file_progress(job: dict, variations: list[dict], completed: int) -> int:
    """A file's percent. While its job lives (queued or processing, a cancel
    settling included) it never goes backwards: each variation counts the
    furthest an attempt of it got (`rules.Variation.progress`). Once the job
    is finished it is the share of the file's variations that were made, as
    the job's own `overallProgress` is."""
    if not variations:
        return 0
    if job["status"] in FINAL:
        return round(100 * completed / len(variations))
    return round(sum(100 if v["status"] == "completed" else v["progress"] for v in variations) / len(variations))


def output_url(job_id: str, variation_id: str) -> str:
    return f"/api/jobs/{job_id}/outputs/{variation_id}"


def job_detail(job: dict, files: list[dict], variations: list[dict]) -> dict:
    by_file: dict[str, list[dict]] = {f["id"]: [] for f in files}
    for v in variations:
        by_file.setdefault(v["file_id"], []).append(v)
    file_views = []
    for f in files:
        vs = by_file.get(f["id"], [])
        done = [v for v in vs if v["status"] == "completed"]
        progress = _file_progress(job, vs, len(done))
        file_views.append(
            {
                "id": f["id"],
                "name": strip_invisible(f["name"]),  # rows stored before intake removed them
                "size": f["size"],
                "durationSeconds": f["duration"],
                "width": f["media"].get("width"),
                "height": f["media"].get("height"),
                "hasAudio": f["media"].get("hasAudio"),
                "status": _file_status(job, vs),
                "progress": progress,
                "completedVariations": len(done),
                "totalVariations": len(vs),
                "error": _file_error(vs),
                "outputs": [
                    {
                        "id": v["id"],
                        "variationIndex": v["variation_index"],
                        "name": v["name"],
                        "size": v["size"],
                        "url": output_url(job["id"], v["id"]),
                        "effects": v["effects"],
                        "host": v["host"],
                    }
                    for v in done
                ],
            }
        )
    completed = sum(f["completedVariations"] for f in file_views)
    return {
        "jobId": job["id"],
        "name": job["name"] or name_from_files([f["name"] for f in files]),
        "status": job["status"],
        "revision": job["revision"],
        "overallProgress": 100 if job["status"] == "completed" else job["progress"],
        "totalVideos": len(files),
        "totalVariations": len(variations),
        "completedVariations": completed,
        "failedVariations": sum(1 for v in variations if v["status"] == "failed"),
        "variationsPerVideo": job["variations_per_video"],
        "seed": job["seed"],
        "thumbnailUrl": f"/api/jobs/{job['id']}/thumbnail" if job["thumbnail_path"] else None,
        "downloadUrl": f"/api/jobs/{job['id']}/download",
        "files": file_views,
        "createdAt": iso(job["created_at"]),
        "startedAt": iso(job["started_at"]),
        "finishedAt": iso(job["finished_at"]),
        "cancelledAt": iso(job["cancelled_at"]),
        "expiresAt": iso(job["expires_at"]),
        "error": job["error"],
        "webhook": webhook(job),
    }


def webhook(job: dict) -> dict | None:
    """How the announcement of the job's end went (its latest, when it ended
    more than once); None when the job has no webhook."""
    if not job.get("webhook_url"):
        return None
    return {
        "url": job["webhook_url"],
        "deliveredAt": iso(job["webhook_delivered_at"]),
        "attempts": job["webhook_attempts"],
        "lastError": job["webhook_error"],
    }


def job_summary(row: dict) -> dict:
    return {
        "id": row["id"],
        "name": row["name"] or name_from_files(row["file_names"]),
        "status": row["status"],
        "revision": row["revision"],
        "totalVideos": row["total_videos"],
        "totalVariations": row["total_variations"],
        "completedVariations": row["completed_variations"],
        "overallProgress": 100 if row["status"] == "completed" else row["progress"],
        "fileNames": [strip_invisible(name) for name in row["file_names"]],
        "thumbnailUrl": f"/api/jobs/{row['id']}/thumbnail" if row["thumbnail_path"] else None,
        "createdAt": iso(row["created_at"]),
        "finishedAt": iso(row["finished_at"]),
        "cancelledAt": iso(row["cancelled_at"]),
        "expiresAt": iso(row["expires_at"]),
        "error": row["error"],
    }


def token_summary(row: dict) -> dict:
    return {
        "id": row["id"],
        "name": strip_invisible(row["name"]),
        "createdAt": iso(row["created_at"]),
        "lastUsedAt": iso(row["last_used_at"]),
    }
