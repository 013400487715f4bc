"""What ad placements check: an output keeps its source's frame rate and is
never longer than the source, nor shorter by more than a frame, whatever its
effects; and the quality bench's VMAF measurement works. Real ffmpeg on tiny
lavfi clips; no timing asserts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bench import quality
from refresher.media import effects as fx
from refresher.media import ffmpeg

from .conftest import FFMPEG
from .support.media import make_clip, run_ffmpeg


def encode(source: Path, target: Path, effects: dict, length_known: bool = True) -> Path:
    info = ffmpeg.probe(FFMPEG, source)
    cmd = fx.encode_command(
        FFMPEG,
        source,
        target,
        effects,
        info.width,
        info.height,
        info.has_audio,
        info.audio_codec,
        duration=info.duration if length_known else None,
        video_frames=ffmpeg.count_video_frames(FFMPEG, source) if length_known else None,
    )
    result = ffmpeg.run_ffmpeg(cmd)
    assert result.ok, result.reason()
    return target


def frame_rate(path: Path) -> float:
    r = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return float(re.search(r"Video: .*?, (\d+(?:\.\d+)?) fps,", r.stderr).group(1))


def frame_count(path: Path) -> int:
    r = subprocess.run(
        [FFMPEG, "-hide_banner", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"], capture_output=True, text=True
    )
    return int(re.findall(r"frame=\s*(\d+)", r.stderr)[-1])


def sound_length(path: Path) -> float:
    r = subprocess.run(
        [FFMPEG, "-hide_banner", "-i", str(path), "-map", "0:a:0", "-f", "null", "-progress", "pipe:1", "-"],
        capture_output=True,
        text=True,
    )
    return int(re.findall(r"^out_time_us=(\d+)", r.stdout, re.M)[-1]) / 1e6


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("quality")
    return {
        25: make_clip(d / "pal.mp4", seconds=1, rate=25),
        30: make_clip(d / "ntsc.mp4", seconds=1, rate=30),
        # the sound outlasts the picture by most of a frame, as in real ads
        "long-sound": make_clip(d / "long-sound.mp4", seconds=1, rate=25, audio_seconds=1.035),
        120: make_clip(d / "fast.mp4", seconds=1, rate=120, audio=False),
        "folder": d,
    }


@pytest.mark.parametrize("length_known", [True, False], ids=["probed", "length-unknown"])
@pytest.mark.parametrize("rate", [25, 30, "long-sound"])
@pytest.mark.parametrize(
    "effects",
    [
        {"brightness": 0.02, "contrast": 1.03, "saturation": 0.97},
        {"brightness": -0.01, "hue": 2.0, "noise": 2, "rotation": -0.002},
        {"contrast": 0.98, "speed": 1.02},
        {"saturation": 1.02, "speed": 0.985},  # recorded before speeds only went up: played at 1x
    ],
    ids=["colour", "grain-rotation", "faster", "old-slower"],
)
def test_output_keeps_the_frame_rate_and_never_outlasts_the_source(clips, rate, effects, length_known):
    source = clips[rate]
    name = f"out-{rate}-{len(effects)}-{effects.get('speed', 1)}-{length_known}.mp4"
    out = encode(source, clips["folder"] / name, effects, length_known)
    src, got = ffmpeg.probe(FFMPEG, source), ffmpeg.probe(FFMPEG, out)
    fps = 25 if rate == "long-sound" else rate
    assert frame_rate(out) == fps
    # the sound ends with the source's (within the 5 ms of rounding in the probed length)
    assert sound_length(source) - 0.011 <= sound_length(out) <= sound_length(source) + 0.001
    assert got.duration <= src.duration + 0.001, "never longer than the source"
    assert got.duration >= src.duration - 1 / fps - 0.001, "shorter by at most one frame"
    assert frame_count(out) == frame_count(source)
    assert got.has_audio and fx.expected_duration(src.duration, effects) == src.duration


def test_frame_rates_above_the_cap_are_halved_without_changing_the_length(clips):
    out = encode(clips[120], clips["folder"] / "out-120.mp4", {"brightness": 0.01, "speed": 1.01})
    assert frame_rate(out) == fx.MAX_FPS
    src, got = ffmpeg.probe(FFMPEG, clips[120]), ffmpeg.probe(FFMPEG, out)
    assert src.duration - 1 / fx.MAX_FPS - 0.001 <= got.duration <= src.duration + 0.001


def test_outputs_are_high_profile_and_the_cap_grows_with_the_picture(clips):
    out = encode(clips[30], clips["folder"] / "profile.mp4", {"brightness": 0.01})
    r = subprocess.run([FFMPEG, "-hide_banner", "-i", str(out)], capture_output=True, text=True)
    assert "Video: h264 (High)" in r.stderr and "yuv420p" in r.stderr

    def maxrate(w, h):
        args = fx.video_args(w, h)
        return int(args[args.index("-maxrate") + 1])

    assert maxrate(640, 360) < maxrate(1280, 720) < maxrate(1080, 1920) == maxrate(2160, 3840)
    assert maxrate(1080, 1920) >= 20_000_000, "1080x1920 is no longer held to 2.5 Mb/s"


def test_speed_only_goes_up_and_effects_stay_unique():
    drawn = [e for row in fx.draw_job_effects("speeds", 5, 20) for e in row]
    speeds = [e["speed"] for e in drawn if "speed" in e]
    assert speeds and all(1 < s <= 1.02 for s in speeds)
    assert len({repr(sorted(e.items())) for e in drawn}) == len(drawn)


@pytest.mark.parametrize("variations", [1, 3, 6, 20])
def test_what_a_job_costs_follows_from_its_inputs_not_the_dice(variations):
    """Every seed gives each source the same number of rotations, speed changes,
    grain and hue turns, so the estimated cost of a job depends only on it."""
    counts = fx.optional_effect_counts(variations)
    costs = set()
    for seed in ("a", "b", "c", "d", "e", "f"):
        rows = fx.draw_job_effects(seed, 2, variations)
        for row in rows:
            assert {name: sum(name in e for e in row) for name in counts} == counts
        costs.add(sum(fx.estimated_cost(e, 1280, 720, 10.0) for row in rows for e in row))
    assert max(costs) - min(costs) < 0.01


def test_commands_keep_their_safety_options():
    # a speed change decodes the source once when its length is known, twice otherwise
    for effects, frames, openings in (
        ({"hue": 1.0}, (50, 25.0), 1),
        ({"speed": 1.01}, (50, 25.0), 1),
        ({"speed": 1.01}, None, 2),
        ({"speed": 1.01}, (240, 120.0), 2),
    ):
        cmd = fx.encode_command(
            "ffmpeg", "/in.mp4", "/out.mp4", effects, 640, 360, True, "aac", duration=2.0, video_frames=frames
        )
        inputs = [i for i, a in enumerate(cmd) if a == "-i"]
        assert len(inputs) == openings
        for i in inputs:
            assert cmd[i - 12 : i] == [
                "-protocol_whitelist",
                "file",
                "-f",
                "mov",
                "-enable_drefs",
                "0",
                "-use_absolute_path",
                "0",
                "-max_pixels",
                str(7680 * 4320),
                "-max_streams",
                "8",
            ]
            assert cmd[i + 1] == "file:/in.mp4"
        assert cmd.count("-threads") == len(inputs) + 1 and all(
            cmd[i + 1] == "1" for i, a in enumerate(cmd) if a == "-threads"
        )
        assert cmd[-5:] == ["-stats_period", "0.05", "-progress", "pipe:1", "file:/out.mp4"]
        assert "-map_metadata" in cmd and "+faststart" in cmd


def test_vmaf_measurement_runs(clips):
    source = clips[25]
    same = quality.measure_vmaf(source, source)
    assert same["frames"] == 25 and same["vmaf"] > 97 and same["vmaf_p1"] > 90 and same["ssim"] > 0.999
    rough = clips["folder"] / "rough.mp4"
    run_ffmpeg("-i", str(source), "-c:v", "libx264", "-preset", "ultrafast", "-crf", "45", str(rough))
    worse = quality.measure_vmaf(rough, source)
    assert worse["vmaf"] < same["vmaf"] - 10 and worse["psnr"] < same["psnr"]
