"""The cleanup daemon and the limits that keep DATA_DIR bounded."""

from __future__ import annotations

import os
import re
import time

from refresher import lifecycle, spool
from refresher.storage.local import tree_size, unshared_size
from refresher.store import Store
from refresher.engine.handle import SupervisorHandle
from refresher.webapp import create_app

from .conftest import PASSWORD, sql, EmbeddedService, make_settings
from .support.servers import wait_until


def gone(svc, job_id) -> bool:
    return svc.get(f"/api/jobs/{job_id}").status_code == 404 and not (svc.settings.data_dir / "jobs" / job_id).exists()


def test_completed_and_cancelled_jobs_expire(make_service, media, database_url):
    svc = make_service(job_ttl_hours=0.0006, cleanup_interval_seconds=0.3, database_url=database_url)  # 2.2 s
    done = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])
    cancelled = svc.submit([media["clip"]], variations=1)["jobId"]
    svc.post(f"/api/jobs/{cancelled}/cancel")
    assert done["status"] == "completed"  # it was there (a loaded machine may take its 2.2 s to encode it)
    wait_until(lambda: gone(svc, done["jobId"]) and gone(svc, cancelled), timeout=15)
    conn = Store.shared(svc.settings.database)
    assert sql(conn, "SELECT COUNT(*) FROM variations")[0][0] == 0


def test_job_queued_past_expiry_fails(make_service, media, database_url):
    svc = make_service(
        encode_workers=1,
        job_ttl_hours=0.001,
        cleanup_interval_seconds=0.3,  # 3.6 s
        database_url=database_url,
    )
    busy = svc.submit([media["slow"]], variations=3)["jobId"]  # busy for 10 s or more
    assert wait_until(lambda: svc.get(f"/api/jobs/{busy}").get_json()["status"] == "processing", timeout=3), (
        "the supervisor claims a queued job at once"
    )
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
    sizes = {j: tree_size(settings.data_dir / "jobs" / j) for j in finished}
    others = service.app.extensions["refresher"].storage.used_bytes() - sum(sizes.values())
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
    svc = make_service(storage_limit_mb=3, cleanup_interval_seconds=0.3, database_url=database_url)
    first = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])["jobId"]
    assert svc.get(f"/api/jobs/{first}").status_code == 200, "under the limit, nothing is evicted"
    # files of no job under jobs/ count, and are swept only once 10 minutes old: now over it
    filler = svc.settings.data_dir / "jobs" / "filler"
    filler.mkdir()
    (filler / "filler").write_bytes(b"\0" * 3 * 1024 * 1024)
    wait_until(lambda: gone(svc, first), timeout=30)
    conn = Store.shared(svc.settings.database)
    assert sql(conn, "SELECT COUNT(*) FROM jobs")[0][0] == 0


def test_eviction_makes_only_the_room_asked_for(service, media):
    finished = [service.wait(service.submit([media["clip"]], variations=1)["jobId"])["jobId"] for _ in range(3)]
    settings = service.settings
    sizes = [tree_size(settings.data_dir / "jobs" / j) for j in finished]
    spare = min(sizes) // 2
    limit = service.app.extensions["refresher"].storage.used_bytes() + spare
    tight = settings.with_overrides(storage_limit_mb=limit / 1024 / 1024)
    conn = Store.shared(settings.database)
    # what cannot fit even with every finished job gone evicts nothing
    assert lifecycle.evict_for_space(conn, tight, extra_needed=tight.storage_limit_bytes + 1) == []
    assert lifecycle.evict_for_space(conn, tight, extra_needed=limit + 1) == []
    assert all(service.get(f"/api/jobs/{j}").status_code == 200 for j in finished)
    # half the oldest job's size more than there is room for: that job goes, no other
    assert lifecycle.evict_for_space(conn, tight, extra_needed=spare + sizes[0] // 2) == finished[:1]
    assert gone(service, finished[0])
    assert all(service.get(f"/api/jobs/{j}").status_code == 200 for j in finished[1:])


def queued_app(tmp_path, media, finished: int, queued: str, variations: int):
    """An app with no supervisor, `finished` jobs of a clip marked completed,
    and one job of media[`queued`] that stays queued: (app, finished ids, queued id)."""
    app = create_app(make_settings(tmp_path / "data"))
    client = app.test_client()
    token = client.post("/api/auth", json={"password": PASSWORD}).get_json()["token"]

    def upload(path, count):
        r = client.post(
            "/api/jobs",
            headers={"Authorization": f"Bearer {token}"},
            data={"videos": [(open(path, "rb"), path.name)], "variations": str(count)},
            content_type="multipart/form-data",
        )
        assert r.status_code == 202, r.get_json()
        return r.get_json()["jobId"]

    done = [upload(media["clip"], 1) for _ in range(finished)]
    store = app.extensions["refresher"].store
    for job_id in done:
        sql(store, "UPDATE jobs SET status = 'completed', finished_at = ? WHERE id = ?", time.time(), job_id)
        sql(store, "UPDATE variations SET status = 'completed' WHERE job_id = ?", job_id)
    return app, done, upload(media[queued], variations)


def test_a_job_that_cannot_fit_under_the_limit_fails_at_start_and_evicts_nothing(tmp_path, media):
    app, finished, queued = queued_app(tmp_path, media, 3, "clip", 20)
    store = app.extensions["refresher"].store
    tight = app.extensions["refresher"].settings.with_overrides(storage_limit_mb=2)
    assert lifecycle.outputs_still_to_make(store, queued) > 3 * 1024 * 1024
    problem = lifecycle.make_room_for(store, tight, {"id": queued, "variations_per_video": 20})
    assert problem is not None and "STORAGE_LIMIT_MB" in problem and "2 MB" in problem, problem
    assert sorted(j for (j,) in sql(store, "SELECT id FROM jobs")) == sorted([*finished, queued])


def test_a_still_picture_evicts_no_finished_job_for_outputs_it_will_not_make(tmp_path, media):
    """A still 1080p60 picture, 50 KB for 4 s: the picture's worst case (10
    bit/s a pixel, 10 MB a variation) is a hundred times what it makes, and
    finished jobs were evicted for the difference. Its outputs are estimated
    from its own bitrate, and no finished job goes."""
    app, finished, still = queued_app(tmp_path, media, 3, "still", 1)
    service = app.extensions["refresher"]
    data = service.settings.data_dir
    for job_id in finished:  # finished jobs large enough to make room, were the worst case believed
        (data / "jobs" / job_id / "filler").write_bytes(b"\0" * 12 * 1024 * 1024)
    tight = service.settings.with_overrides(storage_limit_mb=(service.storage.used_bytes() + 2 * 1024 * 1024) / 2**20)
    assert lifecycle.make_room_for(service.store, tight, {"id": still, "variations_per_video": 1}) is None
    assert all((data / "jobs" / job_id).exists() for job_id in finished)
    assert len(sql(service.store, "SELECT id FROM jobs")) == 4
    needed = lifecycle.outputs_still_to_make(service.store, still)
    assert needed < 4 * media["still"].stat().st_size + 200_000, needed


def test_measured_outputs_decide_what_is_still_needed(tmp_path, media):
    """Once a source's output exists, its next ones are taken to be as large
    (with a margin), whatever the estimate said; eviction follows that."""
    app, finished, still = queued_app(tmp_path, media, 2, "still", 3)
    service = app.extensions["refresher"]
    store, data = service.store, service.settings.data_dir
    first = store.get_job_variations(still)[0]
    (data / first["output_path"]).write_bytes(b"\0" * 3 * 1024 * 1024)  # a source compressed far below its quality
    sql(store, "UPDATE variations SET status = 'completed', size = ? WHERE id = ?", 3 * 1024 * 1024, first["id"])
    assert lifecycle.outputs_still_to_make(store, still) == 2 * int(3 * 1024 * 1024 * lifecycle.MEASURED_MARGIN)
    for job_id in finished:
        (data / "jobs" / job_id / "filler").write_bytes(b"\0" * 1024 * 1024)
    # 7 MB of room for 7.5 MB still to make: the oldest finished job (1 MB) goes, no other
    tight = service.settings.with_overrides(storage_limit_mb=(service.storage.used_bytes() + 7 * 1024 * 1024) / 2**20)
    assert lifecycle.make_room_as_it_runs(store, tight, still) == finished[:1], "only what it takes"


def test_an_upload_too_large_for_the_storage_limit_is_refused_and_evicts_nothing(make_service, media):
    """Three finished jobs, then an hour of a 16×16 picture (95 KB) whose
    outputs alone would pass STORAGE_LIMIT_MB: refused at once, nothing evicted."""
    svc = make_service(storage_limit_mb=4, max_duration_seconds=3600)
    finished = [svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])["jobId"] for _ in range(3)]
    refused = svc.submit([media["endless"]], variations=1, expect=413)
    assert "STORAGE_LIMIT_MB" in refused["error"] and "4 MB" in refused["error"], refused
    assert all(svc.get(f"/api/jobs/{j}").status_code == 200 for j in finished)
    assert len(svc.get("/api/jobs").get_json()) == 3


def test_output_estimate_grows_with_the_picture_and_the_length():
    vertical = lifecycle.estimate_output_bytes(60, 1080, 1920, has_audio=True)
    small = lifecycle.estimate_output_bytes(60, 640, 360, has_audio=True)
    assert vertical > 8 * small
    # between CRF 18 on real footage (at most 7.7 bit/s per pixel measured) and the encoder's cap (12)
    assert 60 * 7.7 * 1080 * 1920 / 8 < vertical < 60 * (12 * 1080 * 1920 + 192_000) / 8
    assert lifecycle.estimate_output_bytes(120, 1080, 1920, has_audio=True) == 2 * vertical
    tiny = lifecycle.estimate_output_bytes(3600, 16, 16, has_audio=False)
    assert tiny >= 3600 * 60 * 20, "at least 20 bytes a frame at 60 fps, whatever the picture"


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
    os.utime(orphan / "x.mp4", (old, old))
    young_orphan = data / "jobs" / "being-uploaded"
    young_orphan.mkdir()
    (young_orphan / "source_x").write_bytes(b"x")
    os.utime(young_orphan, (old, old))  # an old folder, but a file stored in it just now
    stale_upload = data / "incoming" / "stale"
    stale_upload.mkdir(parents=True)
    os.utime(stale_upload, (old, old))
    abandoned_upload = data / "incoming" / "abandoned"  # young, but no request holds it
    abandoned_upload.mkdir()
    (abandoned_upload / "part0").write_bytes(b"x")
    receiving = spool.create(data)  # an upload under way
    (receiving.path / "part0").write_bytes(b"x")

    service.supervisor.stop()
    service.supervisor = SupervisorHandle(service.settings, service.control).start()
    assert service.supervisor.wait_ready()
    assert not partial.exists() and not orphan.exists() and not stale_upload.exists()
    assert not abandoned_upload.exists(), "an upload nobody receives any more goes at once"
    assert young_orphan.exists() and receiving.path.exists(), "what may belong to an upload under way stays"
    receiving.remove()
    assert sorted(p.name for p in folder.iterdir()) == keep
    assert service.get(job["files"][0]["outputs"][0]["url"]).status_code == 200


def test_scheduler_runs_once_per_host(gunicorn_server):
    server = gunicorn_server(WEB_CONCURRENCY=3, CLEANUP_INTERVAL_SECONDS=0.5)
    before = len(re.findall(r"cleanup pass in process (\d+)$", server.log_text(), re.M))  # while it started
    time.sleep(3.2)
    passes = re.findall(r"cleanup pass in process (\d+)$", server.log_text(), re.M)
    assert 2 <= len(passes) - before <= 8, passes  # one every 0.5 s: not one per web worker (3 times as many)
    assert len(set(passes)) == 1, "only the supervisor runs the cleanup daemon"


def test_job_that_cannot_fit_fails_with_a_clear_error(media, small_disk):
    disk = small_disk(8)
    svc = EmbeddedService(make_settings(disk / "data", max_duration_seconds=3600))
    try:
        job_id = svc.submit([media["endless"]], variations=1)["jobId"]  # ~45 MB of outputs, 8 MB disk
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


def test_hard_linked_sources_count_once(tmp_path):
    """A rerun links its sources: they take their room once, and deleting one
    of the two jobs gives none of it back."""
    first, second = tmp_path / "jobs" / "a", tmp_path / "jobs" / "b"
    first.mkdir(parents=True)
    second.mkdir()
    (first / "source").write_bytes(b"x" * 1000)
    (first / "output.mp4").write_bytes(b"y" * 300)
    os.link(first / "source", second / "source")
    assert tree_size(tmp_path) == 1300
    assert unshared_size(first) == 300
    assert unshared_size(second) == 0
