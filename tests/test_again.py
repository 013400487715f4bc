"""Working on a job again: retry its failed variations, resume what a cancel
left unmade, or run its sources again with new effects — with the real
supervisor and the real ffmpeg (a stand-in fails one source on demand)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile

from refresher.storage.local import LocalStorage

from .conftest import FFMPEG, ROOT, decode_errors, sql
from .support.servers import wait_until
from .support.api import assert_nothing_left, login


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def variations_of(svc, job_id) -> dict[tuple[str, int], dict]:
    """(source name, variation index) → its row."""
    names = {f["id"]: f["name"] for f in svc.store.get_job_files(job_id)}
    return {(names[v["file_id"]], v["variation_index"]): v for v in svc.store.get_job_variations(job_id)}


def failing_service(make_service, media, monkeypatch, tmp_path, **overrides):
    """A service whose encodes of media["clip2"] fail while the switch file exists."""
    switch = tmp_path / "fail-clip2"
    switch.touch()
    monkeypatch.setenv("REAL_FFMPEG", FFMPEG)
    monkeypatch.setenv("FAIL_SWITCH", str(switch))
    monkeypatch.setenv("FAIL_INPUT_SIZE", str(media["clip2"].stat().st_size))
    svc = make_service(
        **{"encode_workers": 2, "ffmpeg_binary": str(ROOT / "tests" / "fakes" / "failing_ffmpeg.py"), **overrides}
    )
    return svc, switch


def test_retry_queues_only_the_failed_variations_with_their_effects(make_service, media, monkeypatch, tmp_path):
    svc, switch = failing_service(make_service, media, monkeypatch, tmp_path)
    mixed = svc.submit([media["clip"], media["clip2"]], variations=2, seed="retry")["jobId"]
    all_failed = svc.submit([media["clip2"]], variations=1)["jobId"]
    job = svc.wait(mixed)
    assert job["status"] == "completed" and job["completedVariations"] == 2, job
    assert [f["status"] for f in job["files"]] == ["completed", "failed"]
    assert svc.wait(all_failed)["status"] == "failed"
    before = variations_of(svc, mixed)
    kept = {
        key: sha(svc.settings.data_dir / v["output_path"]) for key, v in before.items() if v["status"] == "completed"
    }

    switch.unlink()  # whatever made them fail is fixed
    r = svc.post(f"/api/jobs/{mixed}/retry")
    assert r.status_code == 202, r.get_json()
    assert r.headers["Location"] == f"/api/jobs/{mixed}"
    body = r.get_json()
    assert body["jobId"] == mixed and body["status"] == "queued" and body["error"] is None
    assert body["completedVariations"] == 2 and body["totalVariations"] == 4
    job = svc.wait(mixed)
    assert job["status"] == "completed" and job["completedVariations"] == 4, job
    assert [f["status"] for f in job["files"]] == ["completed", "completed"]
    assert all(f["error"] is None for f in job["files"])
    after = variations_of(svc, mixed)
    for key, v in after.items():
        assert v["effects"] == before[key]["effects"] and v["id"] == before[key]["id"], "recorded effects"
        assert decode_errors(svc.settings.data_dir / v["output_path"]) == ""
    assert {key: sha(svc.settings.data_dir / after[key]["output_path"]) for key in kept} == kept, (
        "finished variations are not made again"
    )
    assert [after[("second clip.mp4", i)]["attempts"] for i in (1, 2)] == [3, 3], "two failed tries, one retry"

    r = svc.post(f"/api/jobs/{mixed}/retry")
    assert r.status_code == 409 and r.get_json()["status"] == "completed"
    assert "no failed variations" in r.get_json()["error"]

    r = svc.post(f"/api/jobs/{all_failed}/retry")
    assert r.status_code == 202 and r.get_json()["status"] == "queued"
    job = svc.wait(all_failed)
    assert job["status"] == "completed" and job["completedVariations"] == 1 and job["error"] is None


def test_resume_makes_what_the_cancel_left_unmade(make_service, media):
    svc = make_service(encode_workers=1)
    job_id = svc.submit([media["long"]], variations=3, seed="resume")["jobId"]
    wait_until(
        lambda: (
            svc.get(f"/api/jobs/{job_id}").get_json()["completedVariations"] >= 1
            and any(v["status"] == "processing" for v in svc.store.get_job_variations(job_id))
        )
    )
    cancelled = svc.post(f"/api/jobs/{job_id}/cancel").get_json()
    assert cancelled["status"] == "cancelled" and cancelled["completedVariations"] == 1, cancelled
    before = variations_of(svc, job_id)
    [made] = [v for v in before.values() if v["status"] == "completed"]
    made_hash = sha(svc.settings.data_dir / made["output_path"])

    r = svc.post(f"/api/jobs/{job_id}/resume")
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    assert body["status"] == "queued" and body["cancelledAt"] is None and body["seed"] == "resume"
    job = svc.wait(job_id)
    assert job["status"] == "completed" and job["completedVariations"] == 3 and job["overallProgress"] == 100
    after = variations_of(svc, job_id)
    assert {k: v["effects"] for k, v in after.items()} == {k: v["effects"] for k, v in before.items()}
    assert sha(svc.settings.data_dir / after[("long.mp4", made["variation_index"])]["output_path"]) == made_hash
    assert after[("long.mp4", made["variation_index"])]["attempts"] == 1, "the finished one is kept, not redone"
    for v in after.values():
        assert decode_errors(svc.settings.data_dir / v["output_path"]) == ""
    assert not [p for p in (svc.settings.data_dir / "jobs" / job_id).iterdir() if ".part" in p.name]

    r = svc.post(f"/api/jobs/{job_id}/resume")
    assert r.status_code == 409 and r.get_json()["status"] == "completed"
    assert "only a cancelled job can be resumed" in r.get_json()["error"]


def test_retry_and_resume_meet_the_queue_cap_as_an_upload_does(make_service, media, monkeypatch, tmp_path):
    """MAX_QUEUED_JOBS is one rule: with the queue full, a retry and a resume
    get the upload's 503, and the job stays as it was."""
    svc, _switch = failing_service(
        make_service, media, monkeypatch, tmp_path, encode_workers=1, max_queued_jobs=1, max_duration_seconds=3600
    )
    failed = svc.wait(svc.submit([media["clip2"]], variations=1)["jobId"])
    assert failed["status"] == "failed", failed
    cancelled = svc.submit([media["endless"]], variations=1)["jobId"]  # an hour: encodes for long
    assert svc.post(f"/api/jobs/{cancelled}/cancel").get_json()["status"] == "cancelled"
    busy = svc.submit([media["endless"]], variations=1)["jobId"]  # the queue's one place
    upload = svc.post(
        "/api/jobs", data={"videos": [(open(media["clip"], "rb"), "c.mp4")]}, content_type="multipart/form-data"
    )
    assert upload.status_code == 503, upload.get_json()
    for action, job_id, status in (("retry", failed["jobId"], "failed"), ("resume", cancelled, "cancelled")):
        r = svc.post(f"/api/jobs/{job_id}/{action}")
        assert r.status_code == 503, (action, r.get_json())
        assert r.get_json()["error"] == upload.get_json()["error"] and r.headers["Retry-After"], r.get_json()
        assert svc.get(f"/api/jobs/{job_id}").get_json()["status"] == status
    svc.post(f"/api/jobs/{busy}/cancel")
    assert svc.post(f"/api/jobs/{cancelled}/resume").status_code == 202, "room again: taken"
    assert svc.post(f"/api/jobs/{failed['jobId']}/retry").status_code == 503, "and the cap holds again"
    svc.post(f"/api/jobs/{cancelled}/cancel")


def test_a_job_in_the_wrong_state_or_without_its_sources_is_refused(make_service, media):
    svc = make_service(encode_workers=1)
    done = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])["jobId"]
    running = svc.submit([media["slow"]], variations=1)["jobId"]
    svc.wait(running, ("processing",))
    for action in ("retry", "resume"):
        r = svc.post(f"/api/jobs/{running}/{action}")
        assert r.status_code == 409 and r.get_json()["status"] == "processing", r.get_json()
        assert svc.post(f"/api/jobs/nope/{action}").status_code == 404
    assert svc.post("/api/jobs/nope/rerun").status_code == 404
    r = svc.post(f"/api/jobs/{done}/resume")
    assert r.status_code == 409 and r.get_json()["status"] == "completed"
    svc.post(f"/api/jobs/{running}/cancel")

    cancelled = svc.get(f"/api/jobs/{running}").get_json()
    [source] = svc.store.get_job_files(running)
    (svc.settings.data_dir / source["upload_path"]).unlink()
    for action in ("resume", "rerun"):
        r = svc.post(f"/api/jobs/{running}/{action}")
        assert r.status_code == 410 and "slow.mp4" in r.get_json()["error"] and "is gone" in r.get_json()["error"]
    assert svc.get(f"/api/jobs/{running}").get_json()["status"] == cancelled["status"] == "cancelled"

    sql(svc.store, "UPDATE jobs SET expires_at = ? WHERE id = ?", time.time() - 1, done)
    for action in ("retry", "resume", "rerun"):
        r = svc.post(f"/api/jobs/{done}/{action}")
        assert r.status_code == 410 and "expired" in r.get_json()["error"], (action, r.get_json())


def test_rerun_makes_a_new_job_from_the_same_sources(service, media):
    original = service.wait(service.submit([media["clip"], media["clip2"]], variations=2, seed="first")["jobId"])
    r = service.post(f"/api/jobs/{original['jobId']}/rerun")
    assert r.status_code == 202, r.get_json()
    again = r.get_json()
    assert r.headers["Location"] == again["statusUrl"] == f"/api/jobs/{again['jobId']}"
    assert again["jobId"] != original["jobId"] and again["status"] == "queued"
    assert again["seed"] != "first" and again["variationsPerVideo"] == 2 and again["totalVariations"] == 4
    assert [f["name"] for f in again["files"]] == ["clip.mp4", "second clip.mp4"]
    old_sources = [service.settings.data_dir / f["upload_path"] for f in service.store.get_job_files(original["jobId"])]
    new_sources = [service.settings.data_dir / f["upload_path"] for f in service.store.get_job_files(again["jobId"])]
    assert all(new.parent.name == again["jobId"] for new in new_sources), "in the new job's own folder"
    assert [os.stat(p).st_ino for p in new_sources] == [os.stat(p).st_ino for p in old_sources], "hard links"
    done = service.wait(again["jobId"])
    assert done["status"] == "completed" and done["completedVariations"] == 4
    effects = lambda job: [o["effects"] for f in job["files"] for o in f["outputs"]]  # noqa: E731
    assert effects(done) != effects(original), "new effects"

    # the same seed again gives the same effects; the original may be gone by then
    assert service.delete(f"/api/jobs/{original['jobId']}").status_code == 204
    r = service.post(
        f"/api/jobs/{again['jobId']}/rerun", json={"seed": "first", "variations": 2, "name": "Spring sale"}
    )
    assert r.status_code == 202, r.get_json()
    same = service.wait(r.get_json()["jobId"])
    assert same["status"] == "completed" and same["name"] == "Spring sale" and same["seed"] == "first"
    assert effects(same) == effects(original)
    r = service.post(f"/api/jobs/{same['jobId']}/rerun", json={"variations": 1})
    assert r.status_code == 202 and r.get_json()["totalVariations"] == 2
    assert r.get_json()["name"] == "Spring sale", "a rerun keeps the name it was given"


def test_rerun_refuses_bad_options_and_a_full_queue_and_leaves_nothing(make_service, media):
    svc = make_service(encode_workers=1, max_queued_jobs=1)
    done = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])["jobId"]
    jobs_dir = svc.settings.data_dir / "jobs"
    folders = sorted(p.name for p in jobs_dir.iterdir())
    for body in (
        {"variations": 0},
        {"variations": 21},
        {"variations": "x"},
        {"variations": True},
        {"seed": 5},
        {"name": 5},
        {"name": "x" * 101},
        {"name": "evil\u202etxt"},
        {"name": "a\nb"},
        {"colour": "red"},
        [1, 2],
    ):
        r = svc.post(f"/api/jobs/{done}/rerun", json=body)
        assert r.status_code == 400 and r.get_json()["error"], (body, r.get_json())
    r = svc.post(f"/api/jobs/{done}/rerun", data="{not json", content_type="application/json")
    assert r.status_code == 400
    r = svc.post(f"/api/jobs/{done}/rerun", data="seed=1", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415

    busy = svc.submit([media["slow"]], variations=1)["jobId"]
    r = svc.post(f"/api/jobs/{done}/rerun")
    assert r.status_code == 503 and "queue is full" in r.get_json()["error"] and r.headers["Retry-After"]
    assert sorted(p.name for p in jobs_dir.iterdir()) == sorted([*folders, busy]), "nothing left behind"
    assert len(svc.get("/api/jobs").get_json()) == 2
    svc.post(f"/api/jobs/{busy}/cancel")


def test_sources_are_copied_where_a_hard_link_is_not_possible(tmp_path, monkeypatch):
    source = tmp_path / "a" / "source"
    source.parent.mkdir()
    source.write_bytes(b"video bytes")

    def no_links(*_args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    LocalStorage(tmp_path).copy("a/source", "b/copy")
    assert (tmp_path / "b" / "copy").read_bytes() == b"video bytes"
    assert os.stat(tmp_path / "b" / "copy").st_ino != os.stat(source).st_ino


def test_names_at_upload_in_the_list_the_job_the_zip_and_its_manifest(service, media):
    named = service.post(
        "/api/jobs",
        data={"videos": [(open(media["clip"], "rb"), "clip.mp4")], "variations": "1", "name": "  Spring sale – 30 s  "},
        content_type="multipart/form-data",
    )
    assert named.status_code == 202 and named.get_json()["name"] == "Spring sale – 30 s"
    job_id = named.get_json()["jobId"]
    unnamed = service.submit([media["clip"], media["clip2"]], variations=1)["jobId"]
    job = service.wait(job_id)
    assert job["name"] == "Spring sale – 30 s"
    listed = {j["id"]: j["name"] for j in service.get("/api/jobs").get_json()}
    assert listed == {job_id: "Spring sale – 30 s", unnamed: "clip.mp4 and 1 more"}
    assert service.get(f"/api/jobs/{unnamed}").get_json()["name"] == "clip.mp4 and 1 more"
    r = service.get(f"/api/jobs/{job_id}/download")
    assert r.headers["Content-Disposition"] == 'attachment; filename="Spring_sale___30_s.zip"'
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(r.data)).read("manifest.json"))
    assert manifest["name"] == "Spring sale – 30 s"
    service.wait(unnamed)
    manifest = json.loads(
        zipfile.ZipFile(io.BytesIO(service.get(f"/api/jobs/{unnamed}/download").data)).read("manifest.json")
    )
    assert manifest["name"] == "clip.mp4 and 1 more"


def test_a_bad_name_is_refused_and_leaves_nothing(app, client, media):
    headers = login(client)

    def upload(name):
        return client.post(
            "/api/jobs",
            headers=headers,
            content_type="multipart/form-data",
            data={"videos": [(open(media["clip"], "rb"), "clip.mp4")], "name": name},
        )

    for name in ("x" * 101, "bad\x07bell", "right\u202eto left", "zero\u200bwidth", "two\nlines"):
        r = upload(name)
        assert r.status_code == 400 and "name must be 1 to 100 printable characters" in r.get_json()["error"], name
    assert_nothing_left(app)
    r = upload("   ")
    assert r.status_code == 202 and r.get_json()["name"] == "clip.mp4", "a blank name is no name"
