"""The visual effects of a variation, and the ffmpeg command that applies them.

Each variation gets its own random mix drawn from a generator seeded by the
job's seed, the source's position and the variation number, so the same seed
and inputs always give the same effects. Every effect is small enough that
the ad still looks like itself: colour shifts of a few percent, a hue turn of
a few degrees, a touch of film grain, a speed change of at most 2 %, and now
and then a rotation of a fraction of a degree. No mirroring: it would flip
on-screen text.

The trade against the reference palette (rotation 0.001–0.01 rad on every
variation): ffmpeg's rotate filter resamples every pixel and costs about 80 %
of a variation's CPU, so a rotation goes to about one variation in seven, at
0.001–0.003 rad, where it still moves the corners by a pixel or two but
blurs less. Measured with bench/effects_cost.py (see BENCHMARKS.md): under
half the reference chain's CPU per output second, and closer to the source
by SSIM and PSNR.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

OUTPUT_FPS = "30000/1001"       # 29.97
MAX_LONG_SIDE = 1920            # larger sources are scaled down to 1080p-class outputs
VIDEO_ARGS = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "23",
              "-maxrate", "2500k", "-bufsize", "5000k", "-pix_fmt", "yuv420p"]
AUDIO_ARGS = ["-c:a", "aac", "-b:a", "128k"]

# The palette: (name, probability a variation uses it, low, high, decimals).
_PALETTE = [
    ("brightness", 1.0, -0.04, 0.04, 3),
    ("contrast", 1.0, 0.96, 1.04, 3),
    ("saturation", 1.0, 0.95, 1.05, 3),
    ("hue", 0.5, -3.0, 3.0, 1),            # degrees
    ("noise", 0.3, 1, 3, 0),               # temporal grain strength
    ("speed", 0.3, 0.98, 1.02, 3),         # playback speed; audio tempo follows
    ("rotation", 0.15, 0.001, 0.003, 4),   # radians, either direction
]


def _rng(seed: str, position: int, variation_index: int, attempt: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{position}\x00{variation_index}\x00{attempt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def draw_effects(seed: str, position: int, variation_index: int, attempt: int = 0) -> dict:
    """One variation's effects, e.g. {"brightness": 0.012, "contrast": 1.03, "hue": -1.5}."""
    rng = _rng(seed, position, variation_index, attempt)
    effects: dict = {}
    for name, probability, low, high, decimals in _PALETTE:
        used = rng.random() < probability
        value = rng.uniform(low, high)
        negative = rng.random() < 0.5
        if not used:
            continue
        value = round(value, decimals) if decimals else int(round(value))
        if name == "rotation" and negative:
            value = -value
        if (name == "speed" and abs(value - 1) < 0.005) or (name == "hue" and value == 0):
            continue
        effects[name] = value
    return effects


def draw_job_effects(seed: str, files: int, variations: int) -> list[list[dict]]:
    """Effects for every variation of every file, unique within the job."""
    seen: set[str] = set()
    result = []
    for position in range(files):
        row = []
        for index in range(1, variations + 1):
            attempt = 0
            while True:
                effects = draw_effects(seed, position, index, attempt)
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


def video_filter(effects: dict, width: int, height: int) -> str:
    """The -vf chain for a source whose displayed size is width×height."""
    out_w, out_h = output_size(width, height)
    chain = []
    speed = effects.get("speed")
    if speed:
        chain.append(f"setpts=PTS/{speed}")
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
    chain.append(f"fps={OUTPUT_FPS}")
    return ",".join(chain)


def encode_command(binary: str, source: str | Path, target: str | Path, effects: dict,
                   width: int, height: int, has_audio: bool, audio_codec: str | None = None) -> list[str]:
    """The full ffmpeg command for one variation: one single-threaded process,
    progress on stdout, metadata stripped, +faststart. AAC audio is copied as it
    is unless the speed changes (re-encoding it would cost a third of the CPU
    of a small variation and change nothing anybody hears)."""
    from .ffmpeg import SAFE_INPUT_OPTIONS

    cmd = [binary, "-hide_banner", "-nostats", "-loglevel", "error", "-y",
           "-threads", "1", "-filter_threads", "1",
           *SAFE_INPUT_OPTIONS, "-i", f"file:{Path(source).resolve()}",
           "-map", "0:v:0", "-vf", video_filter(effects, width, height), *VIDEO_ARGS, "-threads", "1"]
    if has_audio:
        cmd += ["-map", "0:a:0?"]
        if effects.get("speed"):
            cmd += [*AUDIO_ARGS, "-af", f"atempo={effects['speed']}"]
        elif audio_codec == "aac":
            cmd += ["-c:a", "copy"]
        else:
            cmd += AUDIO_ARGS
    cmd += ["-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1",
            "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
            "-movflags", "+faststart", "-f", "mp4",
            # ffmpeg looks at stdin for `q` (and reports progress) once per stats
            # period: 0.5 s by default, too slow for a snappy cancel.
            "-stats_period", "0.05", "-progress", "pipe:1", f"file:{Path(target).resolve()}"]
    return cmd


def estimated_cost(effects: dict, width: int, height: int, duration: float | None) -> float:
    """Relative encoding cost, for scheduling the longest encodes first.
    Factors measured with bench/effects_cost.py: a rotation roughly triples a
    variation's CPU; grain adds a tenth."""
    out_w, out_h = output_size(width, height)
    cost = (duration or 60.0) / effects.get("speed", 1.0) * out_w * out_h / 1e6
    if "rotation" in effects:
        cost *= 3.0
    if "noise" in effects:
        cost *= 1.1
    return round(cost, 3)


def expected_duration(source_duration: float | None, effects: dict) -> float | None:
    if source_duration is None:
        return None
    return source_duration / effects.get("speed", 1.0)


def every_effect() -> dict:
    """One variation with every effect of the palette at its strongest: what
    the start-up check of the ffmpeg binary encodes."""
    return {name: high for name, _probability, _low, high, _decimals in _PALETTE}
