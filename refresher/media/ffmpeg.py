"""Every ffmpeg call of the service: finding the binary, probing an upload,
taking a thumbnail, and running an encode with progress and a graceful stop.

There is no ffprobe here: the bundled static build ships only ffmpeg, so the
probe decodes one frame with ffmpeg itself and reads the stream description
it prints.

Inputs are always opened with the mov/mp4 demuxer forced and only the `file`
protocol allowed, so nothing inside an upload (a playlist, a reference, a URL)
can make ffmpeg read anything but the uploaded file itself.
"""

from __future__ import annotations

import collections
import functools
import importlib.resources
import os
import re
import select
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ..contract import MAX_PIXELS, MAX_STREAMS
from . import failures

# Graceful stop ladder: `q` on stdin, then SIGTERM, then SIGKILL, each after
# this long. ffmpeg answers `q` within a frame or two; the waits only matter
# for a process that is stuck in I/O or ignores us.
STOP_GRACE_SECONDS = 2.0

# Input options that confine ffmpeg to the uploaded file itself, and its
# decoder to pictures up to 8K: the size a stream declares says nothing about
# its later frames (an MJPEG MOV can hold one 16000x16000 frame after a
# hundred small ones, costing the decoder 400 MB and more), so libavcodec
# refuses any larger picture before it allocates it. And the demuxer to
# MAX_STREAMS streams: a 6 MB MOV with 999 audio streams made every ffmpeg
# call reach about 720 MB, whichever streams it used.
SAFE_INPUT_OPTIONS = [
    "-protocol_whitelist",
    "file",
    "-f",
    "mov",
    "-enable_drefs",
    "0",
    "-use_absolute_path",
    "0",
    "-max_pixels",
    str(MAX_PIXELS),
    "-max_streams",
    str(MAX_STREAMS),
]

# The address space of a probe or thumbnail ffmpeg: a hard ceiling on its
# memory, whatever a file makes its decoder do. An 8K H.264 probe peaks at
# about 250 MB resident and runs within 600 MB of address space.
PROBE_MEMORY_LIMIT = 1024 * 1024 * 1024

# What libavcodec says when it refuses a picture over -max_pixels, and
# libavformat a file over -max_streams.
_OVERSIZED = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count")
_TOO_MANY_STREAMS = "Number of streams exceeds max_streams"
UP_TO_8K = "videos up to 8K (7680×4320) are accepted"


class FFmpegNotFound(RuntimeError):
    pass


class ProbeError(ValueError):
    """The file is not a readable MP4/MOV video."""


class NoVideoStream(ProbeError):
    """A readable MP4/MOV with no picture in it (an audio-only file)."""


class PictureTooLarge(ProbeError):
    """The video has (or declares) a picture larger than 8K."""

    def __init__(self, width: int, height: int):
        super().__init__(f"is {width}×{height}; {UP_TO_8K}")
        self.width, self.height = width, height


class ProbeTimedOut(ProbeError):
    """ffmpeg took longer than it may to read the file, and was killed."""

    def __init__(self, seconds: float):
        super().__init__(f"took longer than {seconds:g} s to read, the most a file may take; it was stopped")


class TooManyStreams(ProbeError):
    """The file has more streams than an ad has."""

    def __init__(self):
        super().__init__(
            f"has more than {MAX_STREAMS} streams; an ad has one video and a few audio streams, "
            f"and at most {MAX_STREAMS} are accepted"
        )


def oversized_picture(line: str) -> PictureTooLarge | None:
    """The refusal of a picture over 8K, if ffmpeg's `line` reports one."""
    found = _OVERSIZED.search(line)
    return PictureTooLarge(int(found.group(1)), int(found.group(2))) if found else None


def bundled_binary() -> str:
    """The static ffmpeg that the imageio-ffmpeg wheel ships for this platform.

    Looked up in the wheel's own folder: imageio-ffmpeg's `get_ffmpeg_exe()`
    would also honour IMAGEIO_FFMPEG_EXE and fall back to an `ffmpeg` on PATH,
    and a distro build there (Debian's 5.1, say) is not the one we test.
    """
    try:
        folder = importlib.resources.files("imageio_ffmpeg.binaries")
    except ModuleNotFoundError:
        raise FFmpegNotFound("imageio-ffmpeg is not installed; install requirements.txt or set FFMPEG_BINARY") from None
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.startswith("ffmpeg") and entry.is_file() and os.access(str(entry), os.X_OK):
            return str(entry)
    raise FFmpegNotFound("the imageio-ffmpeg wheel for this platform ships no ffmpeg; set FFMPEG_BINARY")


def resolve_binary(configured: str | None = None) -> str:
    """FFMPEG_BINARY if set (a path, or a name looked up on PATH), else the
    bundled build; never silently an `ffmpeg` that happens to be on PATH."""
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise FFmpegNotFound(f"FFMPEG_BINARY {configured!r} is not an executable file")
        return found
    return bundled_binary()


_version_cache: dict[str, str] = {}


def version(binary: str) -> str:
    """The first line of `ffmpeg -version`, e.g. 'ffmpeg version 7.1'."""
    if binary not in _version_cache:
        out = subprocess.run(
            [binary, "-hide_banner", "-version"],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
            check=True,
        )
        first = out.stdout.splitlines()[0] if out.stdout else "ffmpeg"
        _version_cache[binary] = " ".join(first.split()[:3])
    return _version_cache[binary]


# --- probe ---------------------------------------------------------------------


@dataclass
class MediaInfo:
    duration: float | None  # seconds, None when the container does not say
    width: int  # as displayed (after rotation metadata)
    height: int
    video_codec: str
    has_audio: bool
    rotation: int = 0  # degrees of display rotation in the container
    audio_codec: str | None = None
    # The video's frame count and rate (`count_video_frames`), counted once
    # at intake; `frames_counted` False when nobody counted (a source stored
    # before counts were kept), True with None when ffmpeg could not tell.
    frames: int | None = None
    frame_rate: float | None = None
    frames_counted: bool = False

    def as_dict(self) -> dict:
        media = {
            "duration": self.duration,
            "width": self.width,
            "height": self.height,
            "videoCodec": self.video_codec,
            "hasAudio": self.has_audio,
            "rotation": self.rotation,
            "audioCodec": self.audio_codec,
        }
        if self.frames_counted:
            media.update(frames=self.frames, frameRate=self.frame_rate)
        return media

    @classmethod
    def from_dict(cls, media: dict, duration: float | None = None) -> MediaInfo:
        """What `as_dict` kept (in the database); `duration` where it was kept apart."""
        return cls(
            duration=media.get("duration", duration) if duration is None else duration,
            width=media["width"],
            height=media["height"],
            video_codec=media.get("videoCodec", ""),
            has_audio=media["hasAudio"],
            rotation=media.get("rotation", 0),
            audio_codec=media.get("audioCodec"),
            frames=media.get("frames"),
            frame_rate=media.get("frameRate"),
            frames_counted="frames" in media,
        )

    def with_frames(self, counted: tuple[int, float] | None) -> MediaInfo:
        """This, with what `count_video_frames` said (None: it could not tell)."""
        frames, rate = counted if counted is not None else (None, None)
        return replace(self, frames=frames, frame_rate=rate, frames_counted=True)


def stored_video_frames(media: dict) -> tuple[int, float] | None | Literal[False]:
    """The frame count and rate kept in a source's `media` (`MediaInfo.as_dict`):
    the pair, None when ffmpeg could not tell at intake, False when they
    were never counted (a source stored before counts were kept)."""
    if "frames" not in media:
        return False
    frames, rate = media.get("frames"), media.get("frameRate")
    return (int(frames), float(rate)) if frames and rate else None


_DURATION = re.compile(r"^\s*Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", re.M)
_STREAM = re.compile(r"^\s*Stream #(\d+):\d+\S*: (Video|Audio): (\w+)(.*)$", re.M)
_SIZE = re.compile(r", (\d{1,5})x(\d{1,5})[ ,]")
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees")


def probe(binary: str, path: str | Path, timeout: float = 60) -> MediaInfo:
    """Decode the first video frame of `path` and describe the file.

    Raises ProbeError when ffmpeg cannot read a video stream from it as MP4/MOV,
    PictureTooLarge when its picture is over 8K. One decoding thread: more
    would decode frames past the first, each at its full size.
    """
    cmd = [
        binary,
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-threads",
        "1",
        *SAFE_INPUT_OPTIONS,
        "-i",
        f"file:{Path(path).resolve()}",
        "-map",
        "0:v:0",
        "-frames:v",
        "1",
        "-f",
        "null",
        "-progress",
        "pipe:1",
        "-",
    ]
    try:
        proc = subprocess.run(
            launch_command(cmd, address_space=PROBE_MEMORY_LIMIT),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:  # (run kills it: ffmpeg is the process it started, exec'd by the wrappers)
        raise ProbeTimedOut(timeout) from None
    err = proc.stderr
    too_large = oversized_picture(err)  # the decoder refused it (and ffmpeg may have given up)
    if too_large:
        raise too_large
    if _TOO_MANY_STREAMS in err:
        raise TooManyStreams()
    if "Input #0" in err and not any(m.group(2) == "Video" for m in _STREAM.finditer(err.partition("Output #0")[0])):
        # read as MP4/MOV, but only sound (or data) inside: say so, not "not readable"
        raise NoVideoStream("has no video stream: it holds only sound, and a variation needs a picture")
    if proc.returncode != 0 or "Input #0" not in err:
        raise ProbeError("is not a readable MP4/MOV video")
    frames = [int(m) for m in re.findall(r"^frame=(\d+)", proc.stdout, re.M)]
    if not frames or frames[-1] < 1:
        raise ProbeError("has no decodable video frames")
    input_part, _, output_part = err.partition("Output #0")
    streams = [m for m in _STREAM.finditer(input_part) if m.group(1) == "0"]
    video = next((m for m in streams if m.group(2) == "Video"), None)
    if video is None:
        raise NoVideoStream("has no video stream: it holds only sound, and a variation needs a picture")
    out_video = next((m for m in _STREAM.finditer(output_part) if m.group(2) == "Video"), None)
    size = _SIZE.search((out_video or video).group(4)) or _SIZE.search(video.group(4))
    if size is None:
        raise ProbeError("has a video stream of unknown size")
    width, height = int(size.group(1)), int(size.group(2))
    if width * height > MAX_PIXELS:
        raise PictureTooLarge(width, height)
    if width < 16 or height < 16:
        raise ProbeError(f"is too small ({width}×{height}); videos must be at least 16×16")
    duration = None
    d = _DURATION.search(input_part)
    if d:
        duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3))
        duration = duration if duration > 0 else None
    rotation = _ROTATION.search(input_part)
    audio = next((m for m in streams if m.group(2) == "Audio"), None)
    return MediaInfo(
        duration=duration,
        width=width,
        height=height,
        video_codec=video.group(3),
        has_audio=audio is not None,
        rotation=int(round(float(rotation.group(1)))) if rotation else 0,
        audio_codec=audio.group(3) if audio else None,
    )


_RATE = re.compile(r"^\s*Stream #0:\d+\S*: Video: .*?, (\d+(?:\.\d+)?) fps,", re.M)
_OUT_TIME = re.compile(r"^out_time_us=(\d+)$", re.M)


@dataclass(frozen=True)
class Demuxed:
    """What reading a file's packets, without decoding them, tells."""

    frames: int  # of the video stream
    frame_rate: float
    data_end: float  # seconds at which the last packet of the video or its audio ends


def demux(binary: str, path: str | Path, timeout: float = 60) -> Demuxed | None:
    """Read the video stream's packets, and the first audio stream's, without
    decoding (a few hundredths of a CPU second for a 10 s 720p clip): how many
    frames the video has, its rate, and where the data really ends (a file
    cut short still has an index that promises all of it). None when ffmpeg
    cannot tell; ProbeTimedOut when it reads for longer than `timeout` (it
    is killed)."""
    cmd = [
        binary,
        "-hide_banner",
        "-nostdin",
        "-nostats",
        *SAFE_INPUT_OPTIONS,
        "-i",
        f"file:{Path(path).resolve()}",
        "-map",
        "0:v:0",
        "-map",
        "0:a:0?",
        "-c",
        "copy",
        "-f",
        "null",
        "-progress",
        "pipe:1",
        "-",
    ]
    try:
        proc = subprocess.run(
            launch_command(cmd),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ProbeTimedOut(timeout) from None
    frames = re.findall(r"^frame=(\d+)", proc.stdout, re.M)
    rate = _RATE.search(proc.stderr)
    ends = _OUT_TIME.findall(proc.stdout)
    if proc.returncode != 0 or not frames or int(frames[-1]) < 1 or rate is None or not ends:
        return None
    return Demuxed(int(frames[-1]), float(rate.group(1)), int(ends[-1]) / 1e6)


def count_video_frames(binary: str, path: str | Path, timeout: float = 60) -> tuple[int, float] | None:
    """How many frames the video stream has, and its frame rate (`demux`);
    None when ffmpeg cannot tell."""
    try:
        found = demux(binary, path, timeout)
    except ProbeTimedOut:
        return None
    return (found.frames, found.frame_rate) if found else None


def make_thumbnail(
    binary: str, source: str | Path, target: str | Path, duration: float | None, width: int = 320, timeout: float = 60
) -> None:
    """A WebP still about `width` px wide, near 2 s into the video (earlier for short ones)."""
    at = 2.0 if duration is None else min(2.0, duration * 0.4)
    cmd = [
        binary,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-ss",
        f"{at:.3f}",
        "-threads",
        "1",
        *SAFE_INPUT_OPTIONS,
        "-i",
        f"file:{Path(source).resolve()}",
        "-map",
        "0:v:0",
        "-frames:v",
        "1",
        "-filter_threads",
        "1",
        "-vf",
        f"scale={width}:-2",
        "-c:v",
        "libwebp",
        "-quality",
        "80",
        "-f",
        "webp",
        f"file:{Path(target).resolve()}",
    ]
    try:
        proc = subprocess.run(
            launch_command(cmd, address_space=PROBE_MEMORY_LIMIT),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"thumbnail took longer than {timeout:g} s") from None
    if proc.returncode != 0 or not Path(target).exists():
        raise RuntimeError(f"thumbnail failed: {proc.stderr.strip()[-300:]}")


# --- how every ffmpeg is started -------------------------------------------------

# What an ffmpeg must have from its first instruction (to die when the
# thread that started it dies; a probe's ceiling on memory; an encode's idle
# priority) is set by util-linux's small exec wrappers, each of which sets
# one thing on its own process and then executes the next program in it:
# `setpriv --pdeathsig`, `prlimit --as`, `chrt --idle`. Not by a preexec_fn:
# every process that starts ffmpeg has threads (gunicorn's, an upload's,
# the scheduler's), and Python code run between fork and exec can deadlock
# on a lock that another thread held at the fork.


class WrapperMissing(FileNotFoundError):
    """A util-linux wrapper is not on PATH or too old. The message says so, in one line."""


@functools.cache
def _wrapper(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise WrapperMissing(
            f"{name} is not on PATH: every ffmpeg is started through util-linux's "
            f"setpriv, prlimit and chrt; install util-linux"
        )
    return found


@functools.cache
def _idle_priority() -> tuple[str, ...]:
    """`chrt --idle 0` where the kernel lets this process ask for SCHED_IDLE
    (asked once per process), else `nice -n 19`: some sandboxes refuse
    SCHED_IDLE."""
    chrt = _wrapper("chrt")
    try:
        said = subprocess.run(
            [chrt, "--idle", "0", chrt, "--pid", "0"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL
        )
        if said.returncode == 0:
            return (chrt, "--idle", "0")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return (_wrapper("nice"), "-n", "19")


def launch_command(cmd: list[str], *, address_space: int | None = None, idle: bool = False) -> list[str]:
    """`cmd` as the service starts it: it gets SIGKILL when the thread that
    started it dies (so no ffmpeg outlives its encode worker or its upload),
    with `address_space` it can map at most that many bytes, with `idle` it
    runs at idle CPU priority. Each holds from the program's first instruction."""
    prefix = [_wrapper("setpriv"), "--pdeathsig", "KILL", "--"]
    if address_space is not None:
        prefix += [_wrapper("prlimit"), f"--as={address_space}", "--"]
    if idle:
        # Encodes take only the CPU nobody else wants, so status polls stay fast
        # while every core encodes. (Since ffmpeg 7 one encode runs demux, decode,
        # filters, encode and mux on threads of their own: a mere nice 10 across
        # all of them still outweighs a web worker's single busy thread.)
        prefix += _idle_priority()
    return prefix + list(cmd)


def check_wrappers() -> None:
    """At start: raise WrapperMissing unless ffmpeg can be started as
    `launch_command` starts it (util-linux 2.33 or newer, for --pdeathsig)."""
    true = shutil.which("true") or "/bin/true"
    for command in (launch_command([true], address_space=PROBE_MEMORY_LIMIT), launch_command([true], idle=True)):
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, errors="replace", timeout=10, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise WrapperMissing(f"{' '.join(command)} did not finish in 10 s") from None
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or ["no message"])[0]  # then comes "Try --help"
            raise WrapperMissing(
                f"ffmpeg cannot be started as the service starts it ({said}); "
                f"setpriv --pdeathsig needs util-linux 2.33 or newer"
            )


# --- running an encode ------------------------------------------------------------


@dataclass
class RunResult:
    returncode: int | None
    stopped: bool = False  # we asked it to stop (cancel or shutdown)
    stalled: bool = False  # no progress for too long, so we stopped it
    stop_stage: str | None = None  # "q", "SIGTERM" or "SIGKILL": what finally ended it
    too_large: PictureTooLarge | None = None  # a frame over 8K, refused by the decoder, so we stopped it
    stderr_tail: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    reached: float | None = None  # seconds of output written, from its progress
    stall_seconds: float | None = None  # the stall limit it ran under

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.stopped and not self.stalled and self.too_large is None

    def reason(self) -> str:
        if self.too_large is not None:
            return f"the video has a {self.too_large.width}×{self.too_large.height} frame; {UP_TO_8K}"
        return failures.describe(
            self.returncode,
            self.stderr_tail,
            reached=self.reached,
            stalled_after=self.stall_seconds if self.stalled else None,
        )

    def raw_tail(self) -> str:
        """ffmpeg's last stderr lines as it wrote them: for the log, never for a user."""
        return " | ".join(line for line in self.stderr_tail[-8:] if line)


def run_ffmpeg(
    cmd: list[str],
    *,
    should_stop: Callable[[], bool] = lambda: False,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
    stall_seconds: float | None = None,
    poll_interval: float = 0.02,
    grace: float | None = None,
    hurry: Callable[[], bool] | None = None,
) -> RunResult:
    """Run one ffmpeg process to the end, or until `should_stop()` says so.

    `cmd` must include `-progress pipe:1 -nostats`; `on_progress` gets the
    output time in seconds. ffmpeg runs at idle priority and dies with the
    thread that started it (`launch_command`), in its own process group with
    stdin a pipe, so a stop can escalate q → SIGTERM → SIGKILL to the whole group.
    A frame over 8K, which the decoder refuses (and ffmpeg would skip), stops
    it too: the output would lack that frame. The process is always reaped
    before this returns. When `hurry()` is true at the stop (a shutdown,
    whose partial output is thrown away anyway), the group is killed at once
    instead: a graceful `q` buys nothing then, and on a loaded machine an idle-
    priority ffmpeg took the whole ladder (4 s) to obey.
    """
    grace = STOP_GRACE_SECONDS if grace is None else grace
    started = time.monotonic()
    proc = subprocess.Popen(
        launch_command(cmd, idle=True),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        bufsize=0,
    )
    assert proc.stdout is not None  # stdout=PIPE
    progress = proc.stdout
    result = RunResult(returncode=None, stall_seconds=stall_seconds)
    tail: collections.deque[str] = collections.deque(maxlen=20)
    refused: list[PictureTooLarge] = []
    drain = threading.Thread(target=_drain_lines, args=(proc.stderr, tail, refused), daemon=True)
    drain.start()
    try:
        if on_start:
            on_start(proc.pid)
        last_progress_at = time.monotonic()
        buffer = b""
        furthest = -1
        stdout_open = True
        with selectors.DefaultSelector() as sel:
            sel.register(progress, selectors.EVENT_READ)
            while True:
                if should_stop():
                    result.stopped = True
                    break
                if refused:
                    break
                if stall_seconds and time.monotonic() - last_progress_at > stall_seconds:
                    result.stalled = True
                    break
                if not stdout_open:
                    # progress pipe closed: ffmpeg is exiting; keep checking for a stop meanwhile
                    if _wait(proc, poll_interval):
                        break
                    continue
                if not sel.select(timeout=poll_interval):
                    continue
                chunk = os.read(progress.fileno(), 65536)
                if not chunk:
                    stdout_open = False
                    sel.unregister(progress)
                    continue
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    key, _, value = line.partition(b"=")
                    if key != b"out_time_us":
                        continue
                    try:
                        micros = int(value)
                    except ValueError:  # "N/A" before the first frame
                        continue
                    if micros > furthest:  # negative values come before the first frame
                        furthest = micros
                        last_progress_at = time.monotonic()
                        if on_progress:
                            on_progress(micros / 1e6)
        if result.stopped or result.stalled or refused:
            result.stop_stage = stop_process_group(proc, 0 if result.stopped and hurry and hurry() else grace)
    finally:
        if proc.poll() is None:  # an exception above: never leave it running
            result.stop_stage = stop_process_group(proc, grace)
        proc.wait()
        drain.join(timeout=1)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe:
                try:
                    pipe.close()
                except OSError:
                    pass
    result.returncode = proc.returncode
    result.stderr_tail = list(tail)
    # read once all of stderr is: a refusal just before ffmpeg ended counts too
    result.too_large = refused[0] if refused else None
    result.elapsed = time.monotonic() - started
    result.reached = furthest / 1e6 if furthest > 0 else None
    return result


def _drain_lines(pipe, tail: collections.deque, refused: list[PictureTooLarge]) -> None:
    for raw in iter(pipe.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            tail.append(line)
            too_large = oversized_picture(line)
            if too_large and not refused:
                refused.append(too_large)


def stop_process_group(proc: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> str:
    """Stop ffmpeg: `q` on stdin; SIGTERM to its group after `grace`; SIGKILL after
    another `grace`. Returns the stage that ended it. The process is reaped."""
    if proc.poll() is not None:
        return "exited"
    if proc.stdin is not None:  # run_ffmpeg gives it one
        try:
            proc.stdin.write(b"q")
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass
    if _wait(proc, grace):
        return "q"
    _signal_group(proc, signal.SIGTERM)
    if _wait(proc, grace):
        return "SIGTERM"
    _signal_group(proc, signal.SIGKILL)
    proc.wait()
    return "SIGKILL"


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for the process to exit; woken the moment it does (a pidfd), not on
    Popen.wait's polling schedule."""
    if proc.poll() is not None:
        return True
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd: fall back to polling
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    return proc.poll() is not None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # its own session: the group id is its pid
    except ProcessLookupError:
        pass
