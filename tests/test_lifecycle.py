"""The cleanup daemon and the limits that keep DATA_DIR bounded."""
from __future__ import annotations

import os
import re
import time

from refresher import lifecycle
from refresher.store import Store
from refresher.engine.supervisor import SupervisorHandle

from .conftest import sql, EmbeddedService, make_settings, wait_until


def gone(svc, job_id) -> bool:
    return svc.get(f"/api/jobs/{job_id}").status_code == 404 and \
        not (svc.settings.data_dir / "jobs" / job_id).exists()


def test_completed_and_cancelled_jobs_expire(make_service, media, database_url):
    svc = make_service(job_ttl_hours=0.0006, cleanup_interval_seconds=0.3, database_url=database_url)  # 2.2 s
    done = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])
    cancelled = svc.submit([media["clip"]], variations=1)["jobId"]
    svc.post(f"/api/jobs/{cancelled}/cancel")
    assert svc.get(f"/api/jobs/{done['jobId']}").status_code == 200
    wait_until(lambda: gone(svc, done["jobId"]) and gone(svc, cancelled), timeout=15)
    conn = Store.shared(svc.settings.database)
    assert sql(conn, "SELECT COUNT(*) FROM variations")[0][0] == 0


def test_job_queued_past_expiry_fails(make_service, media, database_url):
    svc = make_service(encode_workers=1, job_ttl_hours=0.001, cleanup_interval_seconds=0.3,  # 3.6 s
                       database_url=database_url)
    busy = svc.submit([media["slow"]], variations=3)["jobId"]  # busy for 10 s or more
    assert wait_until(lambda: svc.get(f"/api/jobs/{busy}").get_json()["status"] == "processing", timeout=3), \
        "the supervisor claims a queued job at once"
    waiting = svc.submit([media["clip"]], variations=1)["jobId"]
    wait_until(lambda: svc.get(f"/api/jobs/{waiting}").get_json()["status"] == "failed", timeout=40)
    job = svc.get(f"/api/jobs/{waiting}").get_json()
    assert "queue" in job["error"] and job["startedAt"] is None and job["finishedAt"]
    running = svc.get(f"/api/jobs/{busy}").get_json()
    assert running["status"] == "processing", ("running jobs are not touched", running["error"])
    svc.post(f"/api/jobs/{busy}/cancel")


def test_eviction_removes_oldest_finished_jobs_first(service, media):
    finished = [service.wait(service.submit([media["clip"]], variations=1)["jobId"])["jobId"] for _ in range(3)]
    settings = service.settings
    sizes = {j: lifecycle.directory_size(settings.data_dir / "jobs" / j) for j in finished}
    others = lifecycle.directory_size(settings.data_dir) - sum(sizes.values())
    limit = others + sizes[finished[2]] + 1000  # room for the newest job only
    conn = Store.shared(settings.database)
    evicted = lifecycle.evict_for_space(conn, settings.with_overrides(storage_limit_mb=limit / 1024 / 1024))
    assert evicted == finished[:2]
    assert service.get(f"/api/jobs/{finished[2]}").status_code == 200
    assert all(gone(service, j) for j in finished[:2])


def test_eviction_never_touches_queued_or_running_jobs(make_service, media):
    svc = make_service(encode_workers=1)
    done = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])["jobId"]
    running = svc.submit([media["slow"]], variations=1)["jobId"]
    queued = svc.submit([media["clip"]], variations=1)["jobId"]
    conn = Store.shared(svc.settings.database)
    evicted = lifecycle.evict_for_space(conn, svc.settings.with_overrides(storage_limit_mb=0.001))
    assert evicted == [done]
    assert svc.get(f"/api/jobs/{running}").status_code == 200
    assert svc.get(f"/api/jobs/{queued}").status_code == 200
    svc.post(f"/api/jobs/{running}/cancel")
    svc.post(f"/api/jobs/{queued}/cancel")


def test_daemon_evicts_over_the_storage_limit(make_service, media, database_url):
    svc = make_service(storage_limit_mb=0.05, cleanup_interval_seconds=0.3, database_url=database_url)
    first = svc.submit([media["clip"]], variations=1)["jobId"]  # finished jobs only are evicted …
    wait_until(lambda: gone(svc, first), timeout=30)
    conn = Store.shared(svc.settings.database)
    assert sql(conn, "SELECT COUNT(*) FROM jobs")[0][0] == 0


def test_sweep_at_start_removes_what_no_row_owns(service, media):
    job = service.wait(service.submit([media["clip"]], variations=1)["jobId"])
    data = service.settings.data_dir
    folder = data / "jobs" / job["jobId"]
    keep = sorted(p.name for p in folder.iterdir())
    old = time.time() - 3600
    partial = folder / "abc.part.mp4"
    partial.write_bytes(b"partial")
    orphan = data / "jobs" / "deleted-job"
    orphan.mkdir()
    (orphan / "x.mp4").write_bytes(b"x")
    os.utime(orphan, (old, old))
    young_orphan = data / "jobs" / "being-uploaded"
    young_orphan.mkdir()
    stale_upload = data / "incoming" / "stale"
    stale_upload.mkdir(parents=True)
    os.utime(stale_upload, (old, old))
    fresh_upload = data / "incoming" / "fresh"
    fresh_upload.mkdir()

    service.supervisor.stop()
    service.supervisor = SupervisorHandle(service.settings, service.control).start()
    assert service.supervisor.wait_ready()
    assert not partial.exists() and not orphan.exists() and not stale_upload.exists()
    assert young_orphan.exists() and fresh_upload.exists(), "what may belong to an upload under way stays"
    assert sorted(p.name for p in folder.iterdir()) == keep
    assert service.get(job["files"][0]["outputs"][0]["url"]).status_code == 200


def test_scheduler_runs_once_per_host(gunicorn_server):
    server = gunicorn_server(WEB_CONCURRENCY=3, CLEANUP_INTERVAL_SECONDS=0.5)
    time.sleep(3.2)
    passes = re.findall(r"cleanup pass in process (\d+)$", server.log_text(), re.M)
    assert 4 <= len(passes) <= 8, passes
    assert len(set(passes)) == 1, "only the supervisor runs the cleanup daemon"


def test_job_that_cannot_fit_fails_with_a_clear_error(media, small_disk):
    disk = small_disk(8)
    svc = EmbeddedService(make_settings(disk / "data"))
    try:
        job_id = svc.submit([media["clip"]], variations=20)["jobId"]  # ~20 MB of outputs, 8 MB disk
        job = svc.wait(job_id, timeout=30)
        assert job["status"] == "failed" and "not enough disk space" in job["error"], job
        assert job["startedAt"] is None
        small = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])
        assert small["status"] == "completed", "the service carries on"
        # its upload stays until the job expires (a retry needs it), and counts
        # toward the storage limit like any finished job's files
        assert len(list((disk / "data" / "jobs" / job_id).glob("source_*"))) == 1
    finally:
        svc.close()
