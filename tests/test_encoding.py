"""Jobs through the embedded supervisor: real pool, real ffmpeg, real SQLite."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from refresher.store import Store
from refresher.media import ffmpeg

from .conftest import FFMPEG, decode_errors, video_md5


def outputs_of(job):
    return [o for f in job["files"] for o in f["outputs"]]


def output_path(svc, job_id, output_id) -> Path:
    conn = Store.shared(svc.settings.database)
    row = conn.get_variation(output_id)
    conn.close()
    return svc.settings.data_dir / row["output_path"]


def test_two_sources_three_variations_complete(service, media):
    created = service.submit([media["clip"], media["clip2"]], variations=3)
    assert created["totalVariations"] == 6 and created["variationsPerVideo"] == 3
    assert [f["name"] for f in created["files"]] == ["clip.mp4", "second clip.mp4"]
    job = service.wait(created["jobId"])
    assert job["status"] == "completed", job
    assert job["overallProgress"] == 100 and job["completedVariations"] == 6
    assert job["startedAt"] and job["finishedAt"] and job["cancelledAt"] is None

    hashes = {video_md5(media["clip"]), video_md5(media["clip2"])}
    for f, source in zip(job["files"], [media["clip"], media["clip2"]], strict=True):
        assert f["status"] == "completed" and f["progress"] == 100 and len(f["outputs"]) == 3
        assert [o["variationIndex"] for o in f["outputs"]] == [1, 2, 3]
        src = ffmpeg.probe(FFMPEG, source)
        for o in f["outputs"]:
            stem = Path(f["name"]).stem.replace(" ", "_")
            assert o["name"].startswith(f"{stem}_var{o['variationIndex']}_") and o["name"].endswith(".mp4")
            r = service.get(o["url"])
            assert r.status_code == 200 and r.mimetype == "video/mp4"
            assert len(r.data) == o["size"] > 0
            path = output_path(service, job["jobId"], o["id"])
            assert decode_errors(path) == ""
            info = ffmpeg.probe(FFMPEG, path)
            assert info.video_codec == "h264" and info.has_audio == src.has_audio
            assert (info.width, info.height) == (src.width, src.height)
            # never longer than the source, shorter by at most a frame (30 fps), whatever the effects
            assert src.duration - 1 / 30 - 0.001 <= info.duration <= src.duration + 0.001, (
                info.duration,
                src.duration,
                o["effects"],
            )
            hashes.add(video_md5(path))
    assert len(hashes) == 2 + 6, "every output differs from the others and from its source"


def test_outputs_are_h264_yuv420p_faststart_without_metadata(service, media):
    job = service.wait(service.submit([media["clip"]], variations=1)["jobId"])
    path = output_path(service, job["jobId"], outputs_of(job)[0]["id"])
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "+faststart puts the index first"
    r = __import__("subprocess").run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    assert "yuv420p" in r.stderr and "Video: h264" in r.stderr
    assert "encoder         : Lavf" not in r.stderr, "container metadata is stripped"
    assert "Video: h264 (High)" in r.stderr and ", 30 fps," in r.stderr, "High profile, the source's frame rate"
    assert 2.0 - 1 / 30 - 0.001 <= ffmpeg.probe(FFMPEG, path).duration <= ffmpeg.probe(FFMPEG, media["clip"]).duration


@pytest.mark.parametrize("kind", ["vertical", "odd", "rotated"])
def test_awkward_sources(service, media, kind):
    """Vertical, odd-sized, audio-less sources and HEVC MOV with rotation metadata."""
    src = ffmpeg.probe(FFMPEG, media[kind])
    job = service.wait(service.submit([media[kind]], variations=2)["jobId"])
    assert job["status"] == "completed", job
    for o in outputs_of(job):
        path = output_path(service, job["jobId"], o["id"])
        assert decode_errors(path) == ""
        info = ffmpeg.probe(FFMPEG, path)
        assert info.width % 2 == 0 and info.height % 2 == 0
        assert abs(info.width - src.width) <= 1 and abs(info.height - src.height) <= 1
        if kind == "rotated":
            assert (info.width, info.height) == (240, 320), "the rotation is applied, not lost"
        assert info.has_audio == src.has_audio


def test_same_seed_same_effects_and_pixels(service, media):
    a = service.wait(service.submit([media["clip"]], variations=3, seed="spring-campaign")["jobId"])
    b = service.wait(service.submit([media["clip"]], variations=3, seed="spring-campaign")["jobId"])
    c = service.wait(service.submit([media["clip"]], variations=3, seed="other")["jobId"])
    assert a["seed"] == "spring-campaign"
    effects = lambda job: [o["effects"] for o in outputs_of(job)]  # noqa: E731
    assert effects(a) == effects(b)
    assert effects(a) != effects(c)
    assert len({json.dumps(e, sort_keys=True) for e in effects(a)}) == 3, "unique within the job"
    for oa, ob in zip(outputs_of(a), outputs_of(b), strict=True):
        assert video_md5(output_path(service, a["jobId"], oa["id"])) == video_md5(
            output_path(service, b["jobId"], ob["id"])
        )


def test_sources_and_thumbnail_stay_with_the_finished_job_until_it_goes(service, media):
    """Sources are kept until the job expires (retry, resume and rerun need
    them); deleting the job removes every file of it."""
    job = service.wait(service.submit([media["clip"], media["vertical"]], variations=1)["jobId"])
    folder = service.settings.data_dir / "jobs" / job["jobId"]
    files = service.store.get_job_files(job["jobId"])
    names = sorted(p.name for p in folder.iterdir())
    assert sorted(Path(f["upload_path"]).name for f in files) == [n for n in names if n.startswith("source_")]
    assert "thumbnail.webp" in names and len(names) == 2 + 2 + 1, names
    r = service.get(job["thumbnailUrl"])
    assert r.status_code == 200 and r.mimetype == "image/webp" and r.data[8:12] == b"WEBP"
    assert service.delete(f"/api/jobs/{job['jobId']}").status_code == 204
    assert not folder.exists()


def test_progress_rises_smoothly_and_never_goes_back(make_service, media):
    svc = make_service(encode_workers=1)
    job_id = svc.submit([media["long"]], variations=2)["jobId"]
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = svc.get(f"/api/jobs/{job_id}").get_json()
        seen.append(job["overallProgress"])
        if job["status"] == "completed":
            break
        time.sleep(0.03)
    assert seen[-1] == 100
    assert seen == sorted(seen), "overallProgress never goes backwards"
    assert len({p for p in seen if 0 < p < 100}) >= 4, f"progress should rise in steps: {sorted(set(seen))}"


def test_jobs_take_turns_so_a_small_job_is_not_stuck_behind_a_big_one(make_service, media):
    svc = make_service(encode_workers=1)
    big = svc.submit([media["clip"]], variations=6)["jobId"]
    small = svc.submit([media["clip"]], variations=1)["jobId"]
    small_stored = time.time()  # the answer came after the job was committed
    a, b = svc.wait(big), svc.wait(small)
    assert a["status"] == b["status"] == "completed"
    assert a["startedAt"] <= b["startedAt"], "the older job starts first"
    started = sorted(
        (v["dispatched_at"], v["job_id"]) for job in (big, small) for v in svc.store.get_job_variations(job)
    )
    # How many of the big job's variations ran before the small job existed
    # depends on the machine (its upload is probed meanwhile); once it exists,
    # the next free slot is its own.
    after = [job for at, job in started if at >= small_stored]
    assert after[0] == small, ("the small job gets the next free slot", started, small_stored)
    assert big in after[1:], "the big job still had variations to run: the order was decided"


def test_list_jobs_newest_first_with_filters(service, media):
    ids = [service.submit([media["clip"]], variations=1)["jobId"] for _ in range(3)]
    for job_id in ids:
        service.wait(job_id)
    listed = service.get("/api/jobs").get_json()
    assert [j["id"] for j in listed] == ids[::-1]
    item = listed[0]
    assert set(item) >= {
        "id",
        "status",
        "totalVideos",
        "totalVariations",
        "completedVariations",
        "overallProgress",
        "fileNames",
        "thumbnailUrl",
        "createdAt",
        "expiresAt",
    }
    assert item["fileNames"] == ["clip.mp4"] and item["overallProgress"] == 100
    assert item["createdAt"].endswith("Z")
    assert len(service.get("/api/jobs?limit=2").get_json()) == 2
    assert service.get("/api/jobs?status=queued").get_json() == []
    assert service.get("/api/jobs?limit=0").status_code == 400
    assert service.get("/api/jobs?limit=201").status_code == 400
    assert service.get("/api/jobs?status=nope").status_code == 400


def test_output_supports_range_requests(service, media):
    job = service.wait(service.submit([media["clip"]], variations=1)["jobId"])
    o = outputs_of(job)[0]
    whole = service.get(o["url"]).data
    r = service.get(o["url"], headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.data == whole[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    assert service.get(f"/api/jobs/{job['jobId']}/outputs/nope").status_code == 404


def test_within_a_job_the_costliest_encode_starts_first(make_service, media):
    svc = make_service(encode_workers=1)
    job = svc.wait(svc.submit([media["clip"], media["long"]], variations=1)["jobId"])
    conn = Store.shared(svc.settings.database)
    rows = sorted(conn.get_job_variations(job["jobId"]), key=lambda v: v["dispatched_at"])
    assert [r["file_id"] for r in rows] == [job["files"][1]["id"], job["files"][0]["id"]], (
        "the 1280×720 clip is encoded before the 320×240 one"
    )


def audio_md5(path: Path) -> str:
    import subprocess

    r = subprocess.run(
        [FFMPEG, "-hide_banner", "-v", "error", "-i", str(path), "-map", "0:a:0", "-c", "copy", "-f", "md5", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    return r.stdout.strip()


def test_aac_audio_is_copied_unless_the_speed_changes(service, media):
    job = service.wait(service.submit([media["clip"]], variations=8, seed="audio")["jobId"])
    source = audio_md5(media["clip"])
    outputs = outputs_of(job)
    assert {"speed" in o["effects"] for o in outputs} == {True, False}, "the seed gives both kinds"
    for o in outputs:
        copied = audio_md5(output_path(service, job["jobId"], o["id"])) == source
        assert copied == ("speed" not in o["effects"]), o["effects"]


# --- a source's frame count: counted once, at intake -----------------------------------------


def frame_count(path: Path) -> int:
    import re
    import subprocess

    r = subprocess.run(
        [FFMPEG, "-hide_banner", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(re.findall(r"frame=\s*(\d+)", r.stderr)[-1])


def test_a_source_is_counted_at_intake_and_its_speed_variations_end_on_its_last_frame(service, media):
    created = service.submit([media["clip"]], variations=8, seed="audio")
    (stored,) = service.store.get_job_files(created["jobId"])
    source_frames = frame_count(media["clip"])
    assert (stored["media"]["frames"], stored["media"]["frameRate"]) == (source_frames, 30.0), stored["media"]
    job = service.wait(created["jobId"])
    assert job["status"] == "completed", job
    src = ffmpeg.probe(FFMPEG, media["clip"])
    sped = [o for o in outputs_of(job) if "speed" in o["effects"]]
    assert sped, "the seed gives speed changes"
    for o in sped:
        path = output_path(service, job["jobId"], o["id"])
        assert frame_count(path) == source_frames, o["effects"]
        assert src.duration - 1 / 30 - 0.001 <= ffmpeg.probe(FFMPEG, path).duration <= src.duration + 0.001


def _encode_in_worker(tmp_path: Path, source: Path, media: dict, effects: dict) -> tuple[dict, Path]:
    """One variation through Encoder.encode, in this process."""
    import multiprocessing
    import shutil

    from refresher.engine.control import ControlBlock
    from refresher.engine.encoder import Encoder
    from refresher.storage.local import LocalStorage

    data = tmp_path / "data"
    (data / "jobs" / "j").mkdir(parents=True)
    shutil.copy(source, data / "jobs" / "j" / "source_s")
    ours, theirs = multiprocessing.Pipe()
    encoder = Encoder(theirs, ControlBlock.create(data / "run"), LocalStorage(data), FFMPEG, stall_seconds=60)
    task = {
        "id": "v",
        "job_seq": 1,
        "output_path": "jobs/j/v.mp4",
        "upload_path": "jobs/j/source_s",
        "effects": effects,
        "media": media,
        "duration": media["duration"],
    }
    return encoder.encode(task), data / "jobs" / "j" / "v.mp4"


@pytest.mark.parametrize("kept", [True, False], ids=["count-kept", "source-from-before"])
def test_the_encode_worker_uses_the_kept_frame_count(tmp_path, media, monkeypatch, kept):
    source = media["clip"]
    info = ffmpeg.probe(FFMPEG, source)
    counted = ffmpeg.count_video_frames(FFMPEG, source)
    kept_media = info.with_frames(counted).as_dict() if kept else info.as_dict()
    assert ("frames" in kept_media) == kept
    calls = []

    def count(binary, path, timeout=60):
        calls.append(path)
        return counted

    monkeypatch.setattr(ffmpeg, "count_video_frames", count)
    outcome, output = _encode_in_worker(tmp_path, source, kept_media, {"brightness": 0.01, "speed": 1.02})
    assert outcome["outcome"] == "completed", outcome
    assert len(calls) == (0 if kept else 1), "counted once, at intake; a source from before is counted here"
    assert frame_count(output) == counted[0] == frame_count(source)
    assert info.duration - 1 / 30 - 0.001 <= ffmpeg.probe(FFMPEG, output).duration <= info.duration + 0.001
