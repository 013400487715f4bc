"""Getting results out: the streaming ZIP, live progress, thumbnails, deletion."""
from __future__ import annotations

import io
import json
import time
import zipfile

from refresher.store import Store

from .conftest import sql, decode_errors, wait_until


def sse_events(response, limit=10_000):
    """Parse a text/event-stream response body into (event, data) pairs."""
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            event, data = "message", []
            for line in block.splitlines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
            if data:
                yield event, json.loads("\n".join(data))
                limit -= 1
                if not limit:
                    return


def test_zip_layout_store_method_manifest_and_length(service, media, tmp_path):
    same_name = tmp_path / "clip.mp4"
    same_name.write_bytes(media["clip2"].read_bytes())
    job = service.wait(service.submit([media["clip"], same_name, media["clip2"]], variations=2,
                                      seed="zip-test")["jobId"])
    r = service.get(f"/api/jobs/{job['jobId']}/download")
    assert r.status_code == 200 and r.mimetype == "application/zip"
    assert int(r.headers["Content-Length"]) == len(r.data), "Content-Length equals the bytes sent"
    assert r.headers["Content-Disposition"] == f'attachment; filename="refresher-{job["jobId"]}.zip"'
    archive = zipfile.ZipFile(io.BytesIO(r.data))
    assert archive.testzip() is None
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    names = archive.namelist()
    folders = sorted({n.split("/")[0] for n in names if "/" in n})
    assert folders == ["clip", "clip (2)", "second clip"], "one folder per source, same names kept apart"
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["jobId"] == job["jobId"] and manifest["seed"] == "zip-test"
    assert len(manifest["outputs"]) == 6 == len(names) - 1
    by_path = {o["path"]: o for o in manifest["outputs"]}
    for f in job["files"]:
        for o in f["outputs"]:
            entry = next(e for e in by_path.values() if e["id"] == o["id"])
            assert entry["source"] == f["name"] and entry["variationIndex"] == o["variationIndex"]
            assert entry["effects"] == o["effects"] and entry["size"] == o["size"]
            assert archive.getinfo(entry["path"]).file_size == o["size"]
            assert archive.read(entry["path"]) == service.get(o["url"]).data


def test_download_status_codes(make_service, media):
    svc = make_service(encode_workers=1)
    running = svc.submit([media["slow"]], variations=1)["jobId"]
    queued = svc.submit([media["clip"]], variations=1)["jobId"]
    r = svc.get(f"/api/jobs/{queued}/download")
    assert r.status_code == 409 and r.get_json()["status"] == "queued"
    wait_until(lambda: svc.get(f"/api/jobs/{running}").get_json()["status"] == "processing")
    r = svc.get(f"/api/jobs/{running}/download")
    assert r.status_code == 409 and r.get_json()["status"] == "processing"
    svc.post(f"/api/jobs/{queued}/cancel")
    r = svc.get(f"/api/jobs/{queued}/download")
    assert r.status_code == 404 and "no outputs" in r.get_json()["error"]
    svc.post(f"/api/jobs/{running}/cancel")
    assert svc.get("/api/jobs/nope/download").status_code == 404
    conn = Store.shared(svc.settings.database)
    sql(conn, "UPDATE jobs SET expires_at = ? WHERE id = ?", time.time() - 1, queued)
    assert svc.get(f"/api/jobs/{queued}/download").status_code == 410


def test_events_stream_until_final_status(service, media):
    job_id = service.submit([media["long"]], variations=2)["jobId"]
    r = service.get(f"/api/jobs/{job_id}/events", buffered=False)
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    events = list(sse_events(r))
    statuses = [data["status"] for _, data in events]
    progress = [data["overallProgress"] for _, data in events]
    assert statuses[-1] == "completed" and progress[-1] == 100
    assert progress == sorted(progress) and len(events) >= 2
    assert events[-1][1] == service.get(f"/api/jobs/{job_id}").get_json(), "the same JSON as the status route"


def test_events_of_finished_job_is_one_event(service, media):
    job = service.wait(service.submit([media["clip"]], variations=1)["jobId"])
    events = list(sse_events(service.get(f"/api/jobs/{job['jobId']}/events", buffered=False)))
    assert [e[1]["status"] for e in events] == ["completed"]


def test_delete_finished_job_removes_rows_and_files(service, media):
    job = service.wait(service.submit([media["clip"]], variations=2)["jobId"])
    folder = service.settings.data_dir / "jobs" / job["jobId"]
    assert folder.exists()
    r = service.delete(f"/api/jobs/{job['jobId']}")
    assert r.status_code == 204 and r.data == b""
    assert not folder.exists()
    assert service.get(f"/api/jobs/{job['jobId']}").status_code == 404
    conn = Store.shared(service.settings.database)
    assert sql(conn, "SELECT COUNT(*) FROM variations")[0][0] == 0
    assert service.delete(f"/api/jobs/{job['jobId']}").status_code == 404


def test_delete_running_job_is_409(make_service, media):
    svc = make_service(encode_workers=1)
    job_id = svc.submit([media["slow"]], variations=1)["jobId"]
    r = svc.delete(f"/api/jobs/{job_id}")
    assert r.status_code == 409 and r.get_json()["status"] in ("queued", "processing")
    svc.post(f"/api/jobs/{job_id}/cancel")
    assert svc.delete(f"/api/jobs/{job_id}").status_code == 204


def test_thumbnail_near_two_seconds(service, media):
    job = service.submit([media["long"]], variations=1)
    r = service.get(f"/api/jobs/{job['jobId']}/thumbnail")
    assert r.status_code == 200 and r.mimetype == "image/webp"
    width = int.from_bytes(r.data[26:28], "little") & 0x3FFF if r.data[12:16] == b"VP8 " else None
    assert width in (None, 320)
    assert decode_errors_bytes(r.data, service) == ""


def decode_errors_bytes(data: bytes, svc) -> str:
    path = svc.settings.data_dir / "thumb-check.webp"
    path.write_bytes(data)
    try:
        return decode_errors(path)
    finally:
        path.unlink()
