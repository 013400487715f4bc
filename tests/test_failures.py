"""A failed variation says what failed in one sentence; ffmpeg's own lines
(heap addresses, host paths) go to the log only. The failures are real
ffmpeg runs of the service's own encode command."""

from __future__ import annotations

import re

from refresher.engine.control import ControlBlock
from refresher.engine.handle import SupervisorHandle
from refresher.media import effects as fx
from refresher.media import failures, ffmpeg
from refresher.webapp import create_app

from .conftest import FFMPEG, make_settings
from .support.servers import wait_until
from .support.api import login

ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}")
EFFECTS = {"brightness": 0.01, "contrast": 1.0, "saturation": 1.0}


def encode(source, target) -> ffmpeg.RunResult:
    command = fx.encode_command(FFMPEG, source, target, EFFECTS, 320, 240, True, "aac", duration=2.0)
    return ffmpeg.run_ffmpeg(command)


def test_common_ffmpeg_failures_are_sentences_without_addresses_or_paths(media, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 100)
    cases = {
        "the source's data is damaged": encode(garbage, tmp_path / "a.mp4"),
        "the source file is missing": encode(tmp_path / "gone.mp4", tmp_path / "b.mp4"),
        "the output could not be written": encode(media["clip"], tmp_path / "no-such-folder" / "c.mp4"),
    }
    for meaning, result in cases.items():
        assert not result.ok
        sentence = result.reason()
        assert sentence == f"the encode stopped: {meaning}", (sentence, result.stderr_tail)
        assert "\n" not in sentence and str(tmp_path) not in sentence
        assert ADDRESS.search(result.raw_tail()) or str(tmp_path) in result.raw_tail()  # the log keeps it all


def test_an_unknown_failure_ends_in_ffmpegs_last_meaningful_line_cleaned():
    tail = [
        "[libx264 @ 0x55d0517b8880] frobnication went sideways in /srv/refresher/data/jobs/AB/outputs/x.mp4.part",
        "[out#0/mp4 @ 0x560e92428bc0] Nothing was written into output file, because at least one of its streams "
        "received no packets.",
        "Conversion failed!",
    ]
    sentence = failures.describe(1, tail, reached=3.24)
    assert sentence == (
        "the encode failed at 3.2 s of the video (ffmpeg exited with status 1): "
        "[libx264] frobnication went sideways in x.mp4.part"
    )
    assert failures.describe(-9, []).startswith("ffmpeg was killed (SIGKILL)")
    assert failures.describe(-11, ["Segmentation fault"]) == "ffmpeg crashed (SIGSEGV)"
    assert failures.describe(0, ["x"], reached=5.0, stalled_after=120) == (
        "the encode made no progress for 120 s at 5.0 s of the video and was stopped"
    )
    assert failures.describe(1, ["Conversion failed!"]) == "the encode failed (ffmpeg exited with status 1)"


def test_a_failed_variations_error_is_a_sentence_and_the_log_has_ffmpegs_lines(media, tmp_path, capfd):
    """A source damaged after it was accepted: the job fails with a sentence,
    and the supervisor's log has the variation's line and ffmpeg's own."""
    settings = make_settings(tmp_path / "data", encode_workers=1)
    app = create_app(settings)  # no supervisor yet: the job waits in the queue
    client = app.test_client()
    headers = login(client)
    data = {"videos": [(open(media["clip"], "rb"), "ad.mp4")], "variations": "1"}
    job_id = client.post("/api/jobs", headers=headers, data=data, content_type="multipart/form-data").get_json()[
        "jobId"
    ]
    store = app.extensions["refresher"].store
    source = settings.data_dir / store.get_job_files(job_id)[0]["upload_path"]
    source.write_bytes(bytes(range(256)) * 100)

    control = ControlBlock.create(settings.data_dir / "run")
    supervisor = SupervisorHandle(settings, control).start()
    try:
        job = wait_until(
            lambda: (j := client.get(f"/api/jobs/{job_id}", headers=headers).get_json())["status"] == "failed" and j
        )
    finally:
        supervisor.stop()
        control.remove()
    assert job["error"] == "the encode stopped: the source's data is damaged", job
    assert job["files"][0]["error"] == job["error"]
    log = capfd.readouterr().err
    variation = store.get_job_variations(job_id)[0]["id"]
    assert re.search(rf"variation {variation} of job {job_id} started on host \S+", log), log
    assert re.search(rf"variation {variation} of job {job_id} failed on host \S+ after [\d.]+ s: the encode", log)
    assert f"variation {variation}: ffmpeg said: " in log and "moov atom not found" in log
