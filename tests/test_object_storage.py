"""STORAGE_URL=s3://…: sources, outputs and thumbnails in S3-compatible object
storage, over real HTTP (moto's standalone server, or the endpoint given in
TEST_S3_ENDPOINT_URL), with real ffmpeg and real processes."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from refresher import intake, lifecycle
from refresher.storage import objects, open_storage
from refresher.store import Store

from .conftest import WorkerProcess, ffmpeg_pids_writing_under, job_of, submit_to
from .support.servers import free_port, wait_until
from .support.servers import START_COMMANDS, run_python


PREFIX = "team/videos"


@pytest.fixture
def s3_service(make_service, bucket):
    """make(**settings) → an embedded service whose files live in the test's bucket."""

    def make(**overrides):
        return make_service(storage_url=f"s3://{bucket}/{PREFIX}", **overrides)

    return make


def keys(s3, bucket, job_id=None) -> list[str]:
    """The bucket's keys under the service's prefix (or the job's), without the prefix."""
    prefix = f"{PREFIX}/" + (f"jobs/{job_id}/" if job_id else "")
    return [k[len(PREFIX) + 1 :] for k in s3.keys(bucket, prefix)]


def local_files(data_dir: Path) -> list[str]:
    """What the service keeps on its own disk besides its database and run files."""
    return sorted(
        str(p.relative_to(data_dir))
        for p in data_dir.rglob("*")
        if p.is_file()
        and p.parts[len(data_dir.parts)] not in ("run",)
        and not p.name.startswith("refresher.db")
        and p.name != "supervisor.lock"
    )


def test_a_job_lives_in_the_bucket_and_downloads_from_it(s3_service, s3, bucket, media):
    svc = s3_service()
    job = svc.wait(svc.submit([media["clip"], media["clip2"]], variations=2)["jobId"])
    job_id = job["jobId"]
    assert job["status"] == "completed" and job["completedVariations"] == 4, job
    stored = keys(s3, bucket, job_id)
    variations = Store.shared(svc.settings.database).get_job_variations(job_id)
    files = Store.shared(svc.settings.database).get_job_files(job_id)
    expected = sorted(
        [v["output_path"] for v in variations] + [f["upload_path"] for f in files] + [f"jobs/{job_id}/thumbnail.webp"]
    )
    assert stored == expected, "sources, outputs and the thumbnail, and nothing else (no partial)"
    assert keys(s3, bucket) == expected, "nothing outside the job's prefix"
    assert local_files(svc.settings.data_dir) == [], "the disk was scratch only, and is empty again"

    r = svc.get(f"/api/jobs/{job_id}/download")
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(r.data)
    archive = zipfile.ZipFile(io.BytesIO(r.data))
    names = [n for n in archive.namelist() if n.endswith(".mp4")]
    assert len(names) == 4

    output = job["files"][0]["outputs"][0]
    r = svc.get(output["url"] + "?download=1")
    assert r.status_code == 302 and "private" in r.headers["Cache-Control"]
    link = r.headers["Location"]
    assert link.startswith(s3.url) and "Signature" in link or "X-Amz-Signature" in link
    fetched = requests.get(link, timeout=10)
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "video/mp4"
    assert (
        fetched.headers["Content-Disposition"].startswith("attachment")
        and output["name"] in fetched.headers["Content-Disposition"]
    )
    in_zip = next(n for n in names if n.endswith(output["name"]))
    assert fetched.content == archive.read(in_zip)
    partial = requests.get(link, headers={"Range": "bytes=100-199"}, timeout=10)
    assert partial.status_code == 206 and partial.content == fetched.content[100:200]

    thumbnail = svc.get(f"/api/jobs/{job_id}/thumbnail")
    assert thumbnail.status_code == 302
    image = requests.get(thumbnail.headers["Location"], timeout=10)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/webp"
    assert image.content[:4] == b"RIFF"


def test_a_presigned_link_expires(s3_service, s3, bucket, media, monkeypatch):
    svc = s3_service()
    job = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])
    link = svc.get(job["files"][0]["outputs"][0]["url"]).headers["Location"]
    query = parse_qs(urlsplit(link).query)
    assert query["X-Amz-Expires"] == [str(objects.PRESIGNED_SECONDS)] and objects.PRESIGNED_SECONDS <= 600
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs(signed_at.timestamp() - time.time()) < 60, "signed now, so it expires in PRESIGNED_SECONDS"
    if not s3.enforces_expiry:
        pytest.skip("moto's server does not enforce a presigned link's expiry; the given endpoint does")
    monkeypatch.setattr(objects, "PRESIGNED_SECONDS", 1)
    link = svc.get(job["files"][0]["outputs"][0]["url"]).headers["Location"]
    assert requests.get(link, timeout=10).status_code == 200
    time.sleep(2.5)
    assert requests.get(link, timeout=10).status_code == 403, "a link outlives its expiry by nothing"


def test_rejected_uploads_leave_nothing_in_the_bucket(s3_service, s3, bucket, media, tmp_path, monkeypatch):
    svc = s3_service(max_queued_jobs=1)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    r = svc.post(
        "/api/jobs",
        data={"videos": [(open(media["clip"], "rb"), "a.mp4"), (open(junk, "rb"), "junk.mp4")]},
        content_type="multipart/form-data",
    )
    assert r.status_code == 415 and "junk.mp4" in r.get_json()["error"]
    r = svc.post(
        "/api/jobs",
        data={"videos": [(open(media["clip"], "rb"), "a.mp4")], "variations": "99"},
        content_type="multipart/form-data",
    )
    assert r.status_code == 400
    assert keys(s3, bucket) == []
    busy = svc.submit([media["slow"]], variations=1)["jobId"]
    # the queue fills between the early check and the job's transaction: the
    # sources were stored, and must go again
    with monkeypatch.context() as early_check_passes:
        early_check_passes.setattr(intake, "check_queue", lambda store, settings: None)
        r = svc.post(
            "/api/jobs", data={"videos": [(open(media["clip"], "rb"), "late.mp4")]}, content_type="multipart/form-data"
        )
    assert r.status_code == 503 and "queue is full" in r.get_json()["error"]
    assert all(k.startswith(f"jobs/{busy}/") for k in keys(s3, bucket)), keys(s3, bucket)
    incoming = svc.settings.data_dir / "incoming"
    assert not incoming.exists() or not list(incoming.iterdir())
    svc.post(f"/api/jobs/{busy}/cancel")


def test_delete_expiry_and_eviction_remove_the_objects(s3_service, s3, bucket, media):
    svc = s3_service()
    first = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])["jobId"]
    second = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])["jobId"]
    third = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])["jobId"]
    assert keys(s3, bucket, first) and keys(s3, bucket, second) and keys(s3, bucket, third)
    assert svc.delete(f"/api/jobs/{first}").status_code == 204
    assert keys(s3, bucket, first) == []
    storage = open_storage(svc.settings.data_dir, svc.settings.storage_url, svc.settings.host_id)
    used = storage.used_bytes()
    assert used == sum(s3_size for s3_size in (storage.freed_by_deleting(j) for j in (second, third)))
    # usage is counted in the bucket: a limit just under it evicts the oldest job, only
    tight = svc.settings.with_overrides(storage_limit_mb=(used - 1) / 1024 / 1024)
    store = Store.shared(svc.settings.database)
    listings = []
    count = lambda params, **kwargs: listings.append(params.get("Prefix", ""))  # noqa: E731
    storage.client.meta.events.register("provide-client-params.s3.ListObjectsV2", count)
    try:
        assert lifecycle.evict_for_space(store, tight, storage=storage) == [second]
    finally:
        storage.client.meta.events.unregister("provide-client-params.s3.ListObjectsV2", count)
    # once to size every job and the usage; then the evicted job's own objects, to delete them
    assert [prefix.endswith(f"jobs/{second}/") for prefix in listings] == [False, True], listings
    assert keys(s3, bucket, second) == [] and keys(s3, bucket, third)
    assert lifecycle.expire_finished_jobs(store, svc.settings, now=time.time() + 10 * 86400, storage=storage) == [third]
    assert keys(s3, bucket) == []


def test_the_sweep_removes_objects_no_job_owns(s3_service, s3, bucket, media):
    svc = s3_service()
    job_id = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])["jobId"]
    owned = keys(s3, bucket)
    client = s3.client()
    for stray in ("jobs/deleted-job/x.mp4", f"jobs/{job_id}/unowned.mp4", "jobs/loose"):
        client.put_object(Bucket=bucket, Key=f"{PREFIX}/{stray}", Body=b"x")
    client.put_object(Bucket=bucket, Key="other-app/keep.txt", Body=b"not ours")
    storage = open_storage(svc.settings.data_dir, svc.settings.storage_url, svc.settings.host_id)
    store = Store.shared(svc.settings.database)
    assert lifecycle.sweep_temporaries(store, svc.settings, storage=storage) == [], "young: maybe in flight"
    assert len(keys(s3, bucket)) == len(owned) + 3
    lifecycle.sweep_temporaries(store, svc.settings, min_age=0, storage=storage)
    assert keys(s3, bucket) == owned
    assert s3.keys(bucket, "other-app/") == ["other-app/keep.txt"], "outside the prefix is not ours"


def test_rerun_and_retry_read_the_sources_from_the_bucket(s3_service, s3, bucket, media):
    svc = s3_service()
    job_id = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])["jobId"]
    r = svc.post(f"/api/jobs/{job_id}/rerun", json={"variations": 2})
    assert r.status_code == 202, r.get_json()
    again = svc.wait(r.get_json()["jobId"])
    assert again["status"] == "completed" and again["completedVariations"] == 2
    assert len([k for k in keys(s3, bucket, again["jobId"]) if k.endswith(".mp4")]) == 2
    assert any(k.endswith("thumbnail.webp") for k in keys(s3, bucket, again["jobId"]))
    store = Store.shared(svc.settings.database)
    source = store.get_job_files(job_id)[0]["upload_path"]
    s3.client().delete_object(Bucket=bucket, Key=f"{PREFIX}/{source}")
    r = svc.post(f"/api/jobs/{job_id}/rerun")
    assert r.status_code == 410 and "is gone" in r.get_json()["error"]


def test_a_cancel_keeps_stored_outputs_and_no_partial_reaches_the_bucket(s3_service, s3, bucket, media):
    svc = s3_service(encode_workers=1)
    # the costliest encode first (slow), then one that takes seconds too
    # (long): the cancel lands in the middle of it whatever the machine's load
    job_id = svc.submit([media["long"], media["slow"]], variations=1)["jobId"]
    scratch = svc.settings.data_dir / "scratch"
    wait_until(
        lambda: (
            ffmpeg_pids_writing_under(scratch) and svc.get(f"/api/jobs/{job_id}").get_json()["completedVariations"] == 1
        ),
        timeout=180,  # the costliest encode, on a machine that may be busy
    )
    r = svc.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.get_json()["status"] == "cancelled"
    assert ffmpeg_pids_writing_under(scratch) == []
    outputs = [k for k in keys(s3, bucket, job_id) if k.endswith(".mp4")]
    assert len(outputs) == 1 and ".part" not in outputs[0]
    wait_until(lambda: not [p for p in scratch.rglob("*") if p.is_file()], timeout=10)
    assert svc.get(f"/api/jobs/{job_id}/download").status_code == 200
    # resume makes what the cancel left unmade, reading the source from the bucket again
    assert svc.post(f"/api/jobs/{job_id}/resume").status_code == 202
    job = svc.wait(job_id, timeout=120)
    assert job["status"] == "completed" and job["completedVariations"] == 2, job
    assert outputs[0] in keys(s3, bucket, job_id), "the output made before the cancel is the same object"
    assert len([k for k in keys(s3, bucket, job_id) if k.endswith(".mp4")]) == 2


# --- many hosts, no shared disk ---------------------------------------------------------------


@pytest.fixture
def s3_cluster(cluster, s3, bucket):
    """One web process and two worker processes, each with a DATA_DIR of its
    own (scratch), sharing one PostgreSQL and one bucket."""

    def start(workers: int = 2, **env):
        return cluster(workers, disks="own", STORAGE_URL=f"s3://{bucket}/{PREFIX}", **s3.env, **env)

    return start


def _final(web, job_id: str, timeout: float = 180) -> dict:
    return wait_until(
        lambda: (j := job_of(web, job_id))["status"] in ("completed", "failed", "cancelled") and j, timeout=timeout
    )


def test_hosts_sharing_no_disk_make_one_job_and_its_zip(s3_cluster, s3, bucket, media):
    web, hosts, store = s3_cluster()
    job_id = submit_to(web, media["clip"], 6)
    job = _final(web, job_id)
    assert job["status"] == "completed" and job["completedVariations"] == 6, job
    made = [o for f in job["files"] for o in f["outputs"]]
    assert {o["host"] for o in made} == {"worker.1", "worker.2"}, "each host made some"
    r = web.session.get(f"{web.url}/api/jobs/{job_id}/download")
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(r.content)
    assert len([n for n in zipfile.ZipFile(io.BytesIO(r.content)).namelist() if n.endswith(".mp4")]) == 6
    for host in hosts:  # each host dropped its scratch copies once the job was over
        wait_until(
            lambda host=host: not [p for p in (host_dir(host) / "scratch").rglob("*") if p.is_file()], timeout=15
        )
    assert local_files(web.data_dir) == [], "the web process keeps nothing on its disk"


def host_dir(host: WorkerProcess) -> Path:
    return Path(host.env["DATA_DIR"])


def test_a_cancel_across_hosts_keeps_what_was_stored(s3_cluster, s3, bucket, media):
    web, hosts, store = s3_cluster()
    with open(media["clip"], "rb") as quick, open(media["slow"], "rb") as slow:
        r = web.session.post(
            f"{web.url}/api/jobs",
            data={"variations": "2"},
            files=[("videos", ("quick.mp4", quick, "video/mp4")), ("videos", ("slow.mp4", slow, "video/mp4"))],
        )
    assert r.status_code == 202, r.text
    job_id = r.json()["jobId"]
    scratches = [host_dir(h) / "scratch" for h in hosts]
    # a variation of the quick source is made; each host encodes one of the slow one
    wait_until(
        lambda: (
            job_of(web, job_id)["completedVariations"] >= 1 and all(ffmpeg_pids_writing_under(s) for s in scratches)
        ),
        timeout=120,
    )
    r = web.session.post(f"{web.url}/api/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    made = r.json()["completedVariations"]
    assert made >= 1
    assert all(ffmpeg_pids_writing_under(s) == [] for s in scratches)
    stored = [k for k in keys(s3, bucket, job_id) if k.endswith(".mp4")]
    assert len(stored) == made and not [k for k in stored if ".part" in k]
    for scratch in scratches:
        wait_until(lambda scratch=scratch: not [p for p in scratch.rglob("*") if p.is_file()], timeout=15)
    archive = web.session.get(f"{web.url}/api/jobs/{job_id}/download")
    assert len([n for n in zipfile.ZipFile(io.BytesIO(archive.content)).namelist() if n.endswith(".mp4")]) == made


def test_a_worker_killed_and_restarted_on_an_empty_disk_loses_nothing(s3_cluster, s3, bucket, media, tmp_path):
    web, (first, second), store = s3_cluster(workers=2)
    second.stop()  # one host, so the killed one's work cannot be finished elsewhere meanwhile
    job_id = submit_to(web, media["long"], 3)
    wait_until(lambda: any(v["status"] == "completed" for v in store.get_job_variations(job_id)), timeout=120)
    first.stop(signal.SIGKILL)
    done_before = {v["id"] for v in store.get_job_variations(job_id) if v["status"] == "completed"}
    wiped = tmp_path / "wiped"
    wiped.mkdir()
    (tmp_path / "again").mkdir()
    again = WorkerProcess(
        wiped, tmp_path / "again", **{k: v for k, v in first.env.items() if k not in ("DATA_DIR", "REFRESHER_TEST_TAG")}
    )
    try:
        again.start(store)
        job = _final(web, job_id, timeout=240)
        assert job["status"] == "completed" and job["completedVariations"] == 3, job
        assert done_before <= {o["id"] for f in job["files"] for o in f["outputs"]}, "what was stored stays"
        r = web.session.get(f"{web.url}/api/jobs/{job_id}/download")
        assert len([n for n in zipfile.ZipFile(io.BytesIO(r.content)).namelist() if n.endswith(".mp4")]) == 3
    finally:
        again.stop()


def test_each_video_is_stored_while_the_rest_of_the_body_still_arrives(gunicorn_server, s3, bucket, media):
    """Behind a router that allows 30 s from the end of the body to the
    answer, a job of several large files must not store them all only then."""
    server = gunicorn_server(STORAGE_URL=f"s3://{bucket}/{PREFIX}", ENCODE_WORKERS=1)
    boundary = "refresher-test-boundary"

    def part_head(name: str) -> bytes:
        return (
            f'--{boundary}\r\nContent-Disposition: form-data; name="videos"; filename="{name}"\r\n'
            f"Content-Type: video/mp4\r\n\r\n"
        ).encode()

    # the first video and the start of the second (past the server's 64 KB reads): the first has ended
    second = media["slow"].read_bytes()
    first = (
        part_head("first.mp4") + media["clip"].read_bytes() + b"\r\n" + part_head("second.mp4") + second[: 256 * 1024]
    )
    rest = (
        second[256 * 1024 :]
        + f"\r\n--{boundary}\r\nContent-Disposition: form-data; "
        f'name="variations"\r\n\r\n1\r\n--{boundary}--\r\n'.encode()
    )
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/api/jobs")
    conn.putheader("Authorization", server.session.headers["Authorization"])
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(len(first) + len(rest)))
    conn.endheaders()
    conn.send(first)
    stored = wait_until(lambda: [k for k in keys(s3, bucket) if "/source_" in k], timeout=20)
    assert len(stored) == 1, "the first video is stored while the second is still on its way"
    conn.send(rest)
    answer = conn.getresponse()
    body = json.loads(answer.read())
    assert answer.status == 202, body
    assert stored[0].startswith(f"jobs/{body['jobId']}/")
    assert len([k for k in keys(s3, bucket, body["jobId"]) if "/source_" in k]) == 2
    conn.close()
    server.session.post(f"{server.url}/api/jobs/{body['jobId']}/cancel")

    # a refused upload (its second file is no video) deletes the first, stored early
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    junk = (
        part_head("good.mp4")
        + media["clip"].read_bytes()
        + b"\r\n"
        + part_head("second.mp4")
        + b"not a video" * 100
        + f"\r\n--{boundary}--\r\n".encode()
    )
    conn.request(
        "POST",
        "/api/jobs",
        body=junk,
        headers={
            "Authorization": server.session.headers["Authorization"],
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    answer = conn.getresponse()
    assert answer.status == 415 and "second.mp4" in json.loads(answer.read())["error"]
    assert [k for k in keys(s3, bucket) if not k.startswith(f"jobs/{body['jobId']}/")] == []


@pytest.mark.parametrize("command", ["gunicorn", "worker"])
def test_a_bucket_that_cannot_be_used_stops_the_start_with_one_line(s3, bucket, tmp_path, command):
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "DATA_DIR": str(tmp_path / "data"),
        "AUTH_PASSWORD": "x" * 12,
        "STORAGE_URL": f"s3://{bucket}-missing/media",
        "HOST_ID": "refused.1",
    }
    r = run_python(START_COMMANDS[command], env)
    output = (r.stdout + r.stderr).strip()
    said = [line for line in output.splitlines() if "cannot start" in line]
    assert r.returncode == 2 and len(said) == 1, output
    assert f"there is no bucket '{bucket}-missing'" in said[0] and "STORAGE_URL" in said[0], output
    assert "Traceback" not in output, output


def test_health_says_when_the_bucket_cannot_be_reached(s3_service, s3, bucket, monkeypatch):
    from refresher.api import health

    svc = s3_service()
    monkeypatch.setattr(health, "_disk_cache", {"at": 0.0, "used": 0, "reachable": True})
    body = svc.get("/api/health").get_json()
    assert body["status"] == "ok" and "file storage" not in body.get("reason", ""), body
    s3.drop_bucket(bucket)
    monkeypatch.setattr(health, "_disk_cache", {"at": 0.0, "used": 0, "reachable": True})
    r = svc.get("/api/health")
    assert r.status_code == 503 and "the file storage cannot be reached" in r.get_json()["reason"]
    s3.new_bucket_named(bucket)  # for the fixture's own cleanup
