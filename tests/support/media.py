"""Tiny real videos made with ffmpeg's lavfi sources, for the tests, the
benchmarks and the README's screenshots alike."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from refresher.media.ffmpeg import resolve_binary

FFMPEG = resolve_binary(os.environ.get("FFMPEG_BINARY"))


def run_ffmpeg(*args: str) -> None:
    """ffmpeg with `args`, quiet unless it fails (then it raises)."""
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args], check=True, stdin=subprocess.DEVNULL)


def make_clip(
    path: Path,
    size: str = "320x240",
    seconds: float = 2,
    rate: float = 30,
    audio: bool = True,
    audio_seconds: float | None = None,
    video: str | None = None,
    tone: int = 440,
    codec: str = "libx264",
    preset: str = "ultrafast",
    pix_fmt: str = "yuv420p",
    extra: Sequence[str] = (),
) -> Path:
    """`seconds` of lavfi's moving test pattern (or the lavfi graph `video`)
    with a sine tone in AAC cut to the picture's length, or lasting
    `audio_seconds` when given (a sound that outlasts the picture)."""
    args = ["-f", "lavfi", "-i", video or f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency={tone}:duration={audio_seconds or seconds}", "-c:a", "aac"]
        args += [] if audio_seconds else ["-shortest"]
    run_ffmpeg(*args, "-c:v", codec, "-preset", preset, "-pix_fmt", pix_fmt, *extra, str(path))
    return path
