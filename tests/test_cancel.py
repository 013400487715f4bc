"""Cancellation with the real ffmpeg: queued, mid-job, parallel, races, and the
q → SIGTERM → SIGKILL escalation against a stand-in that ignores both."""

from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path

import pytest

from refresher.store import JobNotStarted, Store

from .conftest import FFMPEG, ROOT, decode_errors, ffmpeg_pids_writing_under
from .support.servers import wait_until


def job_folder(svc, job_id) -> Path:
    return svc.settings.data_dir / "jobs" / job_id


def running_variations(svc, job_id):
    return [
        v
        for v in Store.shared(svc.settings.database).get_job_variations(job_id)
        if v["status"] == "processing" and v["ffmpeg_pid"]
    ]


def cancel(svc, job_id):
    started = time.monotonic()
    r = svc.post(f"/api/jobs/{job_id}/cancel")
    return r, time.monotonic() - started


def stop_stages(capfd, count: int) -> list[str]:
    """What ended each of `count` ffmpegs, as the supervisor logged it (to
    the stderr it shares with the test): "q", "SIGTERM" or "SIGKILL". Not the
    answer's time, which a loaded machine can stretch past the SIGTERM stage's."""
    said: list[str] = []

    def stages() -> list[str]:
        said.append(capfd.readouterr().err)
        return re.findall(r"\(ffmpeg stopped by (\S+)\)", "".join(said))

    return wait_until(lambda: len(found := stages()) >= count and found)


def assert_settled_clean(svc, job_id):
    folder = job_folder(svc, job_id)
    assert ffmpeg_pids_writing_under(folder) == [], "no ffmpeg of the job is left"
    assert not [p.name for p in folder.iterdir() if ".part" in p.name], "partial outputs are deleted"


def test_cancel_queued_job_is_immediate_and_never_starts_ffmpeg(make_service, media):
    svc = make_service(encode_workers=1)
    busy = svc.submit([media["slow"]], variations=1)["jobId"]
    wait_until(lambda: running_variations(svc, busy))
    queued = svc.submit([media["clip"]], variations=3)["jobId"]
    assert svc.get(f"/api/jobs/{queued}").get_json()["status"] == "queued"
    r, elapsed = cancel(svc, queued)
    body = r.get_json()
    assert r.status_code == 200 and elapsed < 0.5, elapsed
    assert body["status"] == "cancelled" and body["completedVariations"] == 0
    assert body["totalVariations"] == 3 and body["cancelledAt"].endswith("Z")
    job = svc.get(f"/api/jobs/{queued}").get_json()
    assert job["status"] == "cancelled" and job["startedAt"] is None and job["cancelledAt"]
    assert all(f["status"] == "cancelled" for f in job["files"])
    conn = Store.shared(svc.settings.database)
    assert all(v["attempts"] == 0 and v["started_at"] is None for v in conn.get_job_variations(queued))
    svc.post(f"/api/jobs/{busy}/cancel")
    # the one worker is free now: a job submitted after it runs, and the
    # cancelled one still never started
    later = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])
    assert later["status"] == "completed"
    assert all(v["attempts"] == 0 for v in conn.get_job_variations(queued)), "it never starts later"


def test_cancel_mid_job_keeps_finished_variations(make_service, media, capfd):
    svc = make_service(encode_workers=1)
    job_id = svc.submit([media["long"]], variations=3)["jobId"]
    wait_until(
        lambda: (
            svc.get(f"/api/jobs/{job_id}").get_json()["completedVariations"] >= 1 and running_variations(svc, job_id)
        )
    )
    r, _ = cancel(svc, job_id)
    body = r.get_json()
    assert r.status_code == 200 and body["status"] == "cancelled", body
    assert body["completedVariations"] == 1 and body["totalVariations"] == 3
    assert stop_stages(capfd, 1) == ["q"], "`q` did it, no SIGTERM was needed"
    assert_settled_clean(svc, job_id)

    job = svc.get(f"/api/jobs/{job_id}").get_json()
    assert job["status"] == "cancelled" and job["cancelledAt"] and job["finishedAt"]
    outputs = job["files"][0]["outputs"]
    assert len(outputs) == 1
    kept = svc.get(outputs[0]["url"])
    assert kept.status_code == 200 and len(kept.data) == outputs[0]["size"]
    conn = Store.shared(svc.settings.database)
    row = conn.get_variation(outputs[0]["id"])
    assert decode_errors(svc.settings.data_dir / row["output_path"]) == ""
    files_on_disk = sorted(p.name for p in job_folder(svc, job_id).iterdir())
    sources = [Path(f["upload_path"]).name for f in conn.get_job_files(job_id)]
    assert files_on_disk == sorted([Path(row["output_path"]).name, "thumbnail.webp", *sources])
    statuses = sorted(v["status"] for v in conn.get_job_variations(job_id))
    assert statuses == ["cancelled", "cancelled", "completed"]

    zipped = svc.get(f"/api/jobs/{job_id}/download")
    assert zipped.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(zipped.data)).namelist()
    assert sorted(names) == sorted(["long/" + outputs[0]["name"], "manifest.json"])


def test_cancel_two_variations_running_in_parallel(make_service, media, capfd):
    svc = make_service(encode_workers=2)
    job_id = svc.submit([media["slow"]], variations=4)["jobId"]
    wait_until(lambda: len(running_variations(svc, job_id)) == 2)
    pids = [v["ffmpeg_pid"] for v in running_variations(svc, job_id)]
    r, _ = cancel(svc, job_id)
    assert r.status_code == 200 and r.get_json()["status"] == "cancelled"
    assert r.get_json()["completedVariations"] == 0
    assert stop_stages(capfd, 2) == ["q", "q"], "`q` stopped both, before the ladder's SIGTERM stage"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
    assert_settled_clean(svc, job_id)
    assert svc.get(f"/api/jobs/{job_id}/download").status_code == 404, "no outputs to download"


def test_cancel_one_job_leaves_the_other_running(make_service, media):
    svc = make_service(encode_workers=2)
    a = svc.submit([media["slow"]], variations=1)["jobId"]
    b = svc.submit([media["long"]], variations=1)["jobId"]
    wait_until(lambda: running_variations(svc, a) and running_variations(svc, b))
    r, _ = cancel(svc, a)
    assert r.get_json()["status"] == "cancelled"
    other = svc.wait(b)
    assert other["status"] == "completed" and other["completedVariations"] == 1


def test_cancel_finished_job_is_409_and_twice_is_safe(service, media):
    done = service.wait(service.submit([media["clip"]], variations=1)["jobId"])
    r = service.post(f"/api/jobs/{done['jobId']}/cancel")
    assert r.status_code == 409 and r.get_json()["status"] == "completed" and "error" in r.get_json()
    queued = service.submit([media["slow"]], variations=2)["jobId"]
    first = service.post(f"/api/jobs/{queued}/cancel")
    again = service.post(f"/api/jobs/{queued}/cancel")
    assert first.status_code == 200 and first.get_json()["status"] == "cancelled"
    assert again.status_code == 409 and again.get_json()["status"] == "cancelled"
    assert service.post("/api/jobs/unknown/cancel").status_code == 404


def test_completion_wins_over_a_late_cancel(tmp_path):
    """A cancel accepted while the last variation runs, which then finishes on
    its own: nothing was stopped or skipped, so the job ends completed."""
    conn = Store(tmp_path / "db.sqlite")
    conn.migrate()
    now = time.time()
    conn.create_job(
        {
            "id": "j",
            "variations_per_video": 1,
            "seed": "s",
            "thumbnail_path": None,
            "created_at": now,
            "expires_at": now + 60,
        },
        [{"id": "f", "position": 0, "name": "a.mp4", "size": 1, "upload_path": None, "duration": 1.0}],
        [
            {
                "id": "v",
                "file_id": "f",
                "variation_index": 1,
                "effects": {},
                "name": "a_var1.mp4",
                "output_path": "jobs/j/v.mp4",
            }
        ],
    )
    with pytest.raises(JobNotStarted):  # as the supervisor claims: the queued job is started first
        conn.claim_next_variation("this host", now)
    assert conn.start_job("j", now)
    task = conn.claim_next_variation("this host", now)
    assert (task["id"], task["status"]) == ("v", "processing")
    assert conn.request_cancel("j", now, 3600)["status"] == "processing"
    assert conn.record_outcome("v", "completed", now, 3600, size=10) == ("j", "completed")
    job = conn.get_job("j")
    assert job["status"] == "completed" and job["progress"] == 100


def test_cancelled_jobs_expire_like_completed_ones(service, media):
    queued = service.submit([media["clip"]], variations=1)
    job = service.post(f"/api/jobs/{queued['jobId']}/cancel").get_json()
    detail = service.get(f"/api/jobs/{queued['jobId']}").get_json()
    assert detail["expiresAt"] > detail["cancelledAt"]
    conn = Store.shared(service.settings.database)
    row = conn.get_job(job["jobId"])
    assert row["expires_at"] == pytest.approx(row["finished_at"] + 24 * 3600)


def test_stop_escalates_q_then_sigterm_then_sigkill(make_service, media, tmp_path, monkeypatch):
    """A stand-in ffmpeg ignores `q` and SIGTERM: SIGTERM comes ~2 s after `q`,
    SIGKILL ends it ~2 s later, and the cancel answers once it is dead."""
    log = tmp_path / "stubborn.log"
    monkeypatch.setenv("REAL_FFMPEG", FFMPEG)
    monkeypatch.setenv("STUBBORN_LOG", str(log))
    svc = make_service(encode_workers=1, ffmpeg_binary=str(ROOT / "tests" / "fakes" / "stubborn_ffmpeg.py"))
    job_id = svc.submit([media["clip"]], variations=2)["jobId"]
    wait_until(lambda: log.exists() and "start" in log.read_text())
    time.sleep(0.3)
    asked = time.time()
    r, elapsed = cancel(svc, job_id)
    answered = time.time()
    assert r.status_code == 200 and r.get_json()["status"] == "cancelled"
    events = {line.split()[0]: (int(line.split()[1]), float(line.split()[2])) for line in log.read_text().splitlines()}
    assert set(events) == {"start", "q", "SIGTERM"}, events
    pid = events["start"][0]
    q_at, term_at = events["q"][1], events["SIGTERM"][1]
    assert q_at - asked < 0.3, "q is written at once"
    assert 1.8 < term_at - q_at < 2.6, term_at - q_at
    assert 3.8 < answered - q_at < 5.0, "SIGKILL ~2 s after SIGTERM, then the answer"
    assert 3.8 < elapsed < 5.0
    assert not Path(f"/proc/{pid}").exists(), "the stubborn process is gone"
    conn = Store.shared(svc.settings.database)
    # Longest first: either variation may have been the one that started.
    attempts = sorted(v["attempts"] for v in conn.get_job_variations(job_id))
    assert attempts == [0, 1], "the other variation never started"
