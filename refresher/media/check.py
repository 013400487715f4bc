"""Is this ffmpeg good enough? Asked once at start, before anything is served.

A build that is too old, or lacks an encoder or an option the service passes,
would otherwise fail job after job with ffmpeg's own error; so would a
machine without the util-linux wrappers every ffmpeg is started through. So
the start-up check tries the wrappers, reads the version, looks for the
encoders, and then runs the service's own probe, encode (with every effect)
and thumbnail commands on a tiny clip: whatever option the media code
passes, the trial passes too.

That trial takes about half a second of CPU, so a build that passed is
remembered by its identity (its real path, size, modification time and inode)
together with the code that makes the commands: a restart with the same
binary and the same service skips it. The record lives in the user's cache
folder ($XDG_CACHE_HOME/video-refresher, else ~/.cache/video-refresher);
where that cannot be written, every start runs the trial.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

from . import effects as fx
from . import ffmpeg

# The service is built and tested against the bundled build (9.x). Release
# lines from 6.1 on (the one Ubuntu 24.04 LTS ships) are accepted when they
# pass the trial; older ones (Debian 12's 5.1) are refused outright rather
# than trusted on a trial that cannot cover every source a user sends.
MIN_VERSION = (6, 1)
REQUIRED_ENCODERS = ("libx264", "libwebp", "aac")
_VERSION = re.compile(r"ffmpeg version n?(\d+)\.(\d+)")


class FFmpegUnusable(RuntimeError):
    """The message is one line that names the binary and what it lacks."""


_checked: dict[tuple, str] = {}


def check_binary(binary: str) -> str:
    """Return the binary's version line, or raise FFmpegUnusable (also when
    the util-linux wrappers every ffmpeg is started through are missing)."""
    try:
        ffmpeg.check_wrappers()
    except ffmpeg.WrapperMissing as exc:
        raise FFmpegUnusable(str(exc)) from None
    try:
        stat = os.stat(binary)
    except OSError as exc:
        raise FFmpegUnusable(f"ffmpeg {binary} cannot be used: {exc.strerror}") from None
    key = (os.path.realpath(binary), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)
    if key not in _checked:
        record = _record_path(key)
        _checked[key] = _recalled(record) or _check(binary)
        _remember(record, _checked[key])
    return _checked[key]


def _record_path(key: tuple) -> Path | None:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None
    digest = hashlib.sha256(repr(key).encode())
    for module in (__file__, fx.__file__, ffmpeg.__file__):  # the commands the trial runs
        digest.update(Path(module).read_bytes())
    return Path(base) / "video-refresher" / f"ffmpeg-passed-{digest.hexdigest()[:32]}"


def _recalled(record: Path | None) -> str | None:
    try:
        version = record.read_text().strip() if record else ""
    except OSError:
        return None
    return version if version.startswith("ffmpeg version") else None


def _remember(record: Path | None, version: str) -> None:
    if record is None or _recalled(record) == version:
        return
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=record.parent, prefix=".ffmpeg-passed-")
        with os.fdopen(fd, "w") as f:
            f.write(version + "\n")
        os.replace(temporary, record)
    except OSError:
        pass  # not remembered: the next start runs the trial again


def _run(binary: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, "-hide_banner", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _check(binary: str) -> str:
    where = f"ffmpeg {binary}"
    try:
        out = _run(binary, "-version")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FFmpegUnusable(f"{where} does not run: {exc}") from None
    first = out.stdout.splitlines()[0] if out.stdout.strip() else ""
    if out.returncode != 0 or not first.startswith("ffmpeg version"):
        raise FFmpegUnusable(f"{where} is not an ffmpeg (its -version printed {first[:60]!r})")
    version = " ".join(first.split()[:3])
    found = _VERSION.match(first)
    # A build from git ("ffmpeg version N-11234-g…") has no release number:
    # the trial below decides for it.
    if found and tuple(map(int, found.groups())) < MIN_VERSION:
        raise FFmpegUnusable(
            f"{where} is {version.removeprefix('ffmpeg ')}; Video Refresher needs ffmpeg "
            f"{'.'.join(map(str, MIN_VERSION))} or newer (unset FFMPEG_BINARY to use the bundled build)"
        )
    encoders = _run(binary, "-encoders").stdout
    for name in REQUIRED_ENCODERS:
        if not re.search(rf"^\s*\S+\s+{name}\s", encoders, re.M):
            raise FFmpegUnusable(f"{where} lacks the {name} encoder (unset FFMPEG_BINARY to use the bundled build)")
    _trial(binary, where)
    return version


def _trial(binary: str, where: str) -> None:
    """Probe, encode with every effect, and thumbnail a tiny clip, exactly as
    the service does."""
    with tempfile.TemporaryDirectory(prefix="refresher-ffmpeg-check-") as folder:
        source = Path(folder) / "source.mov"
        made = _run(
            binary,
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=96x64:rate=25:duration=0.5",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=0.5",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            "-f",
            "mov",
            str(source),
        )
        if made.returncode != 0:
            raise FFmpegUnusable(f"{where} cannot make a test clip: {_last_line(made.stderr)}")
        try:
            info = ffmpeg.probe(binary, source)
        except ffmpeg.ProbeError as exc:
            raise FFmpegUnusable(f"{where} cannot read a test clip: it {exc}") from None
        frames = ffmpeg.count_video_frames(binary, source)
        if frames is None:
            raise FFmpegUnusable(f"{where} cannot count the frames of a test clip")
        for known in (frames, None):  # both ways of holding a sped-up ad to its length
            command = fx.encode_command(
                binary,
                source,
                Path(folder) / "out.mp4",
                fx.every_effect(),
                info.width,
                info.height,
                info.has_audio,
                info.audio_codec,
                duration=info.duration,
                video_frames=known,
            )
            result = ffmpeg.run_ffmpeg(command)
            if not result.ok:
                said = result.stderr_tail[-1] if result.stderr_tail else result.reason()
                raise FFmpegUnusable(f"{where} cannot run the service's encode: {_last_line(said)}")
        try:
            ffmpeg.make_thumbnail(binary, source, Path(folder) / "thumbnail.webp", info.duration)
        except RuntimeError as exc:
            raise FFmpegUnusable(f"{where} cannot make a WebP thumbnail: {_last_line(str(exc))}") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no message"
