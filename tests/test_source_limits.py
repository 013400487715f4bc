"""Sources that cost far more than their length says, or that are not what
their index promises, are refused at upload with 415 naming the problem (and
the setting, where there is one), leaving nothing behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from refresher.media import ffmpeg
from refresher.webapp import create_app

from .conftest import FFMPEG, make_settings
from .support.api import assert_nothing_left, login


def make(path: Path, *args: str) -> Path:
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args, str(path)], check=True, stdin=subprocess.DEVNULL
    )
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sources")
    made = {}
    # one video and nine audio streams: more than an ad has
    inputs, maps = ["-f", "lavfi", "-i", "testsrc2=size=64x48:duration=1"], ["-map", "0"]
    for i in range(1, 10):
        inputs += ["-f", "lavfi", "-i", "sine=duration=1"]
        maps += ["-map", str(i)]
    made["streams"] = make(d / "streams.mov", *inputs, *maps, "-c:v", "libx264", "-c:a", "aac", "-shortest")
    # 10 s promised by the index (written first), data for 5 s
    whole = make(
        d / "whole.mp4",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=10",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=10",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-shortest",
        "-movflags",
        "+faststart",
    )
    made["cut"] = d / "ad.mp4"
    made["cut"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    made["whole"] = whole
    # just over DCI 4K, a tenth of a second of one colour
    made["large"] = make(
        d / "large.mp4",
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:size=4112x2176:duration=0.1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
    )
    made["fast"] = make(
        d / "fast.mp4",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=240:duration=0.5",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
    )
    return made


def upload(app, path: Path):
    client = app.test_client()
    with open(path, "rb") as f:
        return client.post(
            "/api/jobs",
            headers=login(client),
            content_type="multipart/form-data",
            data={"videos": [(f, path.name)], "variations": "1"},
        )


@pytest.mark.parametrize(
    "source, status, said",
    [
        ("streams", 415, "streams.mov has more than 8 streams"),
        ("cut", 415, "ad.mp4 is cut short: its data ends at 4.9 s of 10.0 s"),
        (
            "large",
            415,
            "large.mp4 is 4112×2176; sources up to 4096×2160 (either way round) are accepted (MAX_RESOLUTION)",
        ),
        ("fast", 415, "fast.mp4 is 240 fps; sources up to 120 fps are accepted (MAX_FRAME_RATE)"),
    ],
)
def test_a_costly_or_broken_source_is_refused_naming_why(app, sources, source, status, said):
    r = upload(app, sources[source])
    assert r.status_code == status and said in r.get_json()["error"], r.get_json()
    assert_nothing_left(app)


def test_the_limits_are_settings(tmp_path, sources):
    app = create_app(make_settings(tmp_path / "data", max_resolution=(120, 160), max_frame_rate=24))
    r = upload(app, sources["whole"])  # 160×120 fits 120×160 either way round, but 25 fps
    assert r.status_code == 415 and "is 25 fps; sources up to 24 fps" in r.get_json()["error"]
    app = create_app(make_settings(tmp_path / "data2", max_resolution=(100, 100)))
    r = upload(app, sources["whole"])
    assert r.status_code == 415 and "(MAX_RESOLUTION)" in r.get_json()["error"]
    app = create_app(make_settings(tmp_path / "data3"))
    assert upload(app, sources["whole"]).status_code == 202, "the same file is fine within the limits"


def test_every_ffmpeg_call_refuses_a_file_of_too_many_streams(sources):
    """The demuxer stops at the limit for each call, so none pays for 999 streams."""
    with pytest.raises(ffmpeg.TooManyStreams):
        ffmpeg.probe(FFMPEG, sources["streams"])
    assert ffmpeg.demux(FFMPEG, sources["streams"]) is None
    found = ffmpeg.demux(FFMPEG, sources["whole"])
    assert found is not None and found.frames == 250 and found.frame_rate == 25 and found.data_end == 10.0
    cut = ffmpeg.demux(FFMPEG, sources["cut"])
    assert cut is not None and 4.5 < cut.data_end < 5.5
