"""The visual effects of a variation, and the ffmpeg command that applies them.

Each variation gets its own random mix drawn from a generator seeded by the
job's seed, the source's position and the variation number, so the same seed
and inputs always give the same effects. Every effect is small enough that
the ad still looks like itself: colour shifts of a few percent, a hue turn of
a few degrees, light film grain, playback up to 2 % faster, and now and then
a rotation of a fraction of a degree. No mirroring: it would flip on-screen
text.

Ad placements have hard length limits, so an output keeps its source's frame
rate (up to 60 fps) and length: never longer, and shorter by at most a frame.

The trade against the reference palette (rotation 0.001–0.01 rad on every
variation): ffmpeg's rotate filter resamples every pixel, so a rotation goes
to three variations in twenty (see optional_effect_counts), at 0.001–0.003
rad, where it still moves the corners by a pixel or two but blurs less. The CPU this saves goes into the
encoder: High profile at `superfast` instead of `ultrafast`, CRF 18, a cap
sized to the picture. Measured with bench/quality.py (VMAF against the same
effects rendered losslessly, on real footage; see BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

MAX_LONG_SIDE = 1920  # larger sources are scaled down to 1080p-class outputs
MAX_FPS = 60  # the source's frame rate is kept, up to this
# Frames are retimed only above MAX_FPS. (ffmpeg's -fpsmax made a 2.00 s 120 fps
# source 2.03 s long; the fps filter keeps the length.)
FRAME_RATE = f"fps=fps='min(source_fps,{MAX_FPS})'"

# H.264 High profile, 8-bit 4:2:0: what every ad platform and player takes.
# `superfast` rather than `ultrafast`: deblocking, CABAC, B-frames, 8x8
# transforms and adaptive quantisation, which end the blocking in smooth
# gradients, at about 0.8 of the reference chain's CPU (bench/quality.py).
# Slower presets cost more than the reference chain at 1080x1920 (veryfast
# 2.68, medium 5.2 CPU s per s, against 2.65); see BENCHMARKS.md.
PRESET = "superfast"
CRF = 18
# The bitrate cap grows with the picture: bits per second per output pixel
# (1080x1920: 24.9 Mb/s, 1280x720: 11.1 Mb/s, 640x360: 2.8 Mb/s). CRF decides
# the rate of ordinary footage; the cap binds only on very detailed pictures,
# and 12 is the lowest that kept a detailed 1080x1920 clip above VMAF 95.
MAXRATE_BITS_PER_PIXEL = 12
BUFSIZE_SECONDS = 2
AUDIO_ARGS = ["-c:a", "aac", "-b:a", "128k"]

# The palette: (name, probability a variation uses it, low, high, decimals).
_PALETTE = [
    ("brightness", 1.0, -0.04, 0.04, 3),
    ("contrast", 1.0, 0.96, 1.04, 3),
    ("saturation", 1.0, 0.95, 1.05, 3),
    ("hue", 0.5, 0.2, 3.0, 1),  # degrees, either direction
    ("noise", 0.3, 1, 1, 0),  # temporal grain, the lightest: 2 cost 1080x1920 detail VMAF 94.6,
    # 3 doubled 720p bitrates
    ("speed", 0.3, 1.005, 1.02, 3),  # playback speed, only faster: the last frame is held to the source's length
    ("rotation", 0.15, 0.001, 0.003, 4),  # radians, either direction
]


def _rng(seed: str, position: int, variation_index: int, attempt: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{position}\x00{variation_index}\x00{attempt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def draw_effects(
    seed: str, position: int, variation_index: int, attempt: int = 0, uses: set[str] | None = None
) -> dict:
    """One variation's effects, e.g. {"brightness": 0.012, "contrast": 1.03, "hue": -1.5}.
    `uses` names the optional effects it carries; without it, each is drawn
    with its probability."""
    rng = _rng(seed, position, variation_index, attempt)
    effects: dict = {}
    for name, probability, low, high, decimals in _PALETTE:
        used = rng.random() < probability
        value = rng.uniform(low, high)
        negative = rng.random() < 0.5
        if uses is not None and probability < 1:
            used = name in uses
        if not used:
            continue
        value = round(value, decimals) + 0.0 if decimals else int(round(value))  # + 0.0: never -0.0
        if name in ("hue", "rotation") and negative:
            value = -value
        effects[name] = value
    return effects


def optional_effect_counts(variations: int) -> dict[str, int]:
    """How many of a source's variations carry each optional effect: its
    probability times the count, rounded half up. Fixed by the count alone, so
    that what a job costs follows from its inputs (a rotation adds 30–90 % to
    a variation's CPU), not from the dice; which variations carry them is
    drawn."""
    return {name: int(probability * variations + 0.5) for name, probability, *_ in _PALETTE if probability < 1}


def draw_job_effects(seed: str, files: int, variations: int) -> list[list[dict]]:
    """Effects for every variation of every file, unique within the job."""
    seen: set[str] = set()
    result = []
    for position in range(files):
        picker = _rng(seed, position, 0, -1)
        carriers = {
            name: set(picker.sample(range(1, variations + 1), count))
            for name, count in optional_effect_counts(variations).items()
        }
        row = []
        for index in range(1, variations + 1):
            uses = {name for name, chosen in carriers.items() if index in chosen}
            attempt = 0
            while True:
                effects = draw_effects(seed, position, index, attempt, uses)
                key = repr(sorted(effects.items()))
                if key not in seen:
                    break
                attempt += 1
            seen.add(key)
            row.append(effects)
        result.append(row)
    return result


def output_size(width: int, height: int) -> tuple[int, int]:
    """Even dimensions (yuv420p needs them), the long side capped at MAX_LONG_SIDE."""
    scale = min(1.0, MAX_LONG_SIDE / max(width, height))
    w = max(2, int(width * scale) // 2 * 2)
    h = max(2, int(height * scale) // 2 * 2)
    return w, h


def rate_control(width: int, height: int) -> list[str]:
    """CRF with a bitrate cap sized to the output picture."""
    out_w, out_h = output_size(width, height)
    maxrate = MAXRATE_BITS_PER_PIXEL * out_w * out_h
    return ["-crf", str(CRF), "-maxrate", str(maxrate), "-bufsize", str(maxrate * BUFSIZE_SECONDS)]


def video_args(width: int, height: int) -> list[str]:
    """The video encoder's options for an output of a width×height source."""
    return [
        "-c:v",
        "libx264",
        "-preset",
        PRESET,
        *rate_control(width, height),
        "-profile:v",
        "high",
        "-pix_fmt",
        "yuv420p",
    ]


def video_filter(effects: dict, width: int, height: int) -> str:
    """The visual effects, frame by frame, for a source whose displayed size is
    width×height. Timing (the speed effect) is not part of it: see encode_command."""
    out_w, out_h = output_size(width, height)
    chain = []
    if (out_w, out_h) != (width, height):
        chain.append(f"scale={out_w}:{out_h}:flags=bicubic")
    chain.append("format=yuv420p")
    if "rotation" in effects:
        chain.append(f"rotate={effects['rotation']}:fillcolor=black")
    eq = [f"{k}={effects[k]}" for k in ("brightness", "contrast", "saturation") if k in effects]
    if eq:
        chain.append("eq=" + ":".join(eq))
    if "hue" in effects:
        chain.append(f"hue=h={effects['hue']}")
    if "noise" in effects:
        chain.append(f"noise=alls={effects['noise']}:allf=t")
    return ",".join(chain)


def encode_command(
    binary: str,
    source: str | Path,
    target: str | Path,
    effects: dict,
    width: int,
    height: int,
    has_audio: bool,
    audio_codec: str | None = None,
    *,
    duration: float | None = None,
    video_frames: tuple[int, float] | None = None,
    encoder_args: list[str] | None = None,
) -> list[str]:
    """The full ffmpeg command for one variation: one single-threaded process,
    progress on stdout, metadata stripped, +faststart.

    The output keeps the source's frame rate (up to MAX_FPS) and its length:
    no filter retimes the frames. A speed effect plays the picture faster and
    holds its last frame to the source's end, so that a variation is never
    longer than its ad, nor shorter by more than a frame. When the source's
    `duration` and `video_frames` (its video's frame count and rate, from
    ffmpeg.count_video_frames) are known and the rate is kept, the sped-up
    picture and sound are padded (the last frame held, silence) and cut at
    the source's frame count and length: one decode. Otherwise the source is
    opened a second time: the first opening, decoded without deblocking since
    its pixels are never seen, gives the output its frame times and its end,
    and the second the picture, overlaid on it; the sound likewise.

    AAC audio is copied as it is unless the speed changes (re-encoding it would
    cost a third of the CPU of a small variation and change nothing anybody
    hears). With the source's probed `duration`, the output stops there even
    if the streams run on past what the container states, so the cost of a
    variation is bounded by the length its source was accepted with.
    `encoder_args` replaces the video encoder's options (the quality bench
    renders the same chain losslessly with it)."""
    from .ffmpeg import SAFE_INPUT_OPTIONS

    url = f"file:{Path(source).resolve()}"
    out_w, out_h = output_size(width, height)
    chain = video_filter(effects, width, height)
    speed = effects.get("speed")
    if speed is not None and speed <= 1:
        # Recorded before speeds only went up (a retry or resume of an old
        # job): slowing down would outlast the source, so it plays at 1x.
        speed = None
    cmd = [binary, "-hide_banner", "-nostats", "-loglevel", "error", "-y", "-filter_threads", "1"]
    if speed and duration and video_frames and video_frames[1] <= MAX_FPS:
        hold = duration - duration / speed + 1.0  # more than enough: the cuts below end it
        # ffmpeg gives the length in hundredths, rounded: the source's own is
        # at least 5 ms less
        length = duration - 0.005
        cmd += [
            "-threads",
            "1",
            *SAFE_INPUT_OPTIONS,
            "-i",
            url,
            "-map",
            "0:v:0",
            "-vf",
            f"setpts=PTS/{speed},{FRAME_RATE},{chain},tpad=stop_mode=clone:stop_duration={hold:.3f},"
            f"trim=end_frame={video_frames[0]}",
        ]
        if has_audio:
            cmd += [
                "-map",
                "0:a:0?",
                "-af",
                f"atempo={speed},apad=whole_dur={length:.3f},atrim=end={length:.3f}",
                *AUDIO_ARGS,
            ]
    elif speed:
        clock = (
            f"{FRAME_RATE},format=yuv420p"
            if (out_w, out_h) == (width, height)
            else f"{FRAME_RATE},scale={out_w}:{out_h}:flags=neighbor,format=yuv420p"
        )
        graph = (
            f"[0:v:0]{clock}[clock];[1:v:0]setpts=PTS/{speed},{chain}[picture];"
            f"[clock][picture]overlay=eof_action=repeat:format=yuv420[v]"
        )
        if has_audio:
            # the sound follows the picture's tempo; silence from the first
            # opening's audio, mixed in, makes it end where the source's ends
            graph += (
                f";[0:a:0]volume=0[quiet];[1:a:0]atempo={speed}[tempo];"
                f"[quiet][tempo]amix=inputs=2:duration=first:normalize=0[a]"
            )
        cmd += [
            "-threads",
            "1",
            "-skip_loop_filter",
            "all",
            *SAFE_INPUT_OPTIONS,
            "-i",
            url,
            "-threads",
            "1",
            *SAFE_INPUT_OPTIONS,
            "-i",
            url,
            "-filter_complex_threads",
            "1",
            "-filter_complex",
            graph,
            "-map",
            "[v]",
        ]
        if has_audio:
            cmd += ["-map", "[a]", *AUDIO_ARGS]
    else:
        cmd += ["-threads", "1", *SAFE_INPUT_OPTIONS, "-i", url, "-map", "0:v:0", "-vf", f"{FRAME_RATE},{chain}"]
        if has_audio:
            cmd += ["-map", "0:a:0?"]
            cmd += ["-c:a", "copy"] if audio_codec == "aac" else AUDIO_ARGS
    cmd += [*(encoder_args if encoder_args is not None else video_args(width, height)), "-threads", "1"]
    if duration:
        cmd += ["-t", f"{math.ceil(duration * 1000) / 1000:.3f}"]
    cmd += [
        "-sn",
        "-dn",
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
        "-flags:a",
        "+bitexact",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        # ffmpeg looks at stdin for `q` (and reports progress) once per stats
        # period: 0.5 s by default, too slow for a snappy cancel.
        "-stats_period",
        "0.05",
        "-progress",
        "pipe:1",
        f"file:{Path(target).resolve()}",
    ]
    return cmd


# What an optional effect adds to a variation's encoding CPU, as a share of
# a plain one (bench/effects_cost.py): the filters add their own work per pixel,
# so the shares add up rather than multiply.
EXTRA_COST = {"rotation": 0.6, "speed": 0.15, "noise": 0.1}


def estimated_cost(effects: dict, width: int, height: int, duration: float | None) -> float:
    """Relative encoding cost, for scheduling the longest encodes first."""
    out_w, out_h = output_size(width, height)
    plain = (duration or 60.0) * out_w * out_h / 1e6
    return round(plain * (1 + sum(share for name, share in EXTRA_COST.items() if name in effects)), 3)


def expected_duration(source_duration: float | None, effects: dict) -> float | None:
    """Every output is as long as its source, whatever its effects."""
    return source_duration


def every_effect() -> dict:
    """One variation with every effect of the palette at its strongest: what
    the start-up check of the ffmpeg binary encodes."""
    return {name: high for name, _probability, _low, high, _decimals in _PALETTE}
