"""Which ffmpeg runs: the bundled static build unless FFMPEG_BINARY names
another, never an `ffmpeg` that happens to be on PATH; and a build that is
too old or lacks what the service needs is refused at start with one line."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from refresher.media import check, ffmpeg

from .conftest import FFMPEG, ROOT

START_COMMANDS = [
    pytest.param([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "app:app"], id="gunicorn"),
    pytest.param([sys.executable, "app.py"], id="app.py"),
]


def fake_ffmpeg(folder: Path, body: str, name: str = "ffmpeg") -> Path:
    """A stand-in script; `$REAL` in `body` is the bundled ffmpeg."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nREAL=" + ffmpeg.bundled_binary() + "\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def old_ffmpeg(folder: Path) -> Path:
    return fake_ffmpeg(
        folder, 'echo "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026"\necho "built with gcc 12"\n'
    )


def without_libx264(folder: Path) -> Path:
    # every call goes to the real binary, but the encoder list lacks libx264
    return fake_ffmpeg(
        folder,
        'for a in "$@"; do [ "$a" = "-encoders" ] && '
        '{ "$REAL" "$@" | grep -v libx264; exit 0; }; done\nexec "$REAL" "$@"\n',
    )


def without_stats_period(folder: Path) -> Path:
    # a build that does not know one of the options the encode passes
    return fake_ffmpeg(
        folder,
        'for a in "$@"; do [ "$a" = "-stats_period" ] && '
        "{ echo \"Unrecognized option 'stats_period'.\" >&2; exit 8; }; done\n"
        'exec "$REAL" "$@"\n',
    )


def test_the_bundled_build_is_the_default_even_with_an_ffmpeg_on_path(tmp_path, monkeypatch):
    old_ffmpeg(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "bin" / "ffmpeg"))
    assert shutil.which("ffmpeg") == str(tmp_path / "bin" / "ffmpeg")
    assert ffmpeg.resolve_binary(None) == ffmpeg.bundled_binary()
    assert Path(ffmpeg.bundled_binary()).is_relative_to(Path(__import__("imageio_ffmpeg").__file__).parent)
    assert check.check_binary(ffmpeg.resolve_binary(None)).startswith("ffmpeg version")


def test_ffmpeg_binary_names_another_build(tmp_path):
    link = tmp_path / "my-ffmpeg"
    link.symlink_to(ffmpeg.bundled_binary())
    assert ffmpeg.resolve_binary(str(link)) == str(link)
    with pytest.raises(ffmpeg.FFmpegNotFound, match="FFMPEG_BINARY"):
        ffmpeg.resolve_binary(str(tmp_path / "nothing-here"))


@pytest.mark.parametrize(
    "make, expected",
    [
        (old_ffmpeg, "is version 5.1.9-0+deb12u1; Video Refresher needs ffmpeg 6.1 or newer"),
        (without_libx264, "lacks the libx264 encoder"),
        (without_stats_period, "cannot run the service's encode: Unrecognized option 'stats_period'."),
    ],
)
def test_an_unusable_build_is_refused_with_the_reason(tmp_path, make, expected):
    binary = make(tmp_path / "bin")
    with pytest.raises(check.FFmpegUnusable) as raised:
        check.check_binary(str(binary))
    message = str(raised.value)
    assert expected in message and str(binary) in message and "\n" not in message


def test_a_build_that_passed_is_remembered_by_its_identity_and_the_service_s_code(tmp_path, monkeypatch):
    """The trial costs about half a second a start: a restart with the same
    binary skips it; another binary, a changed one, or one that failed runs it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = tmp_path / "calls"
    binary = fake_ffmpeg(tmp_path / "bin", f'echo x >> {calls}\nexec "$REAL" "$@"\n')

    def checked_afresh(path) -> int:
        """How many times ffmpeg ran for one start's check (a new process: nothing in memory)."""
        check._checked.clear()
        before = len(calls.read_text().splitlines()) if calls.exists() else 0
        assert check.check_binary(str(path)).startswith("ffmpeg version")
        return len(calls.read_text().splitlines()) - before

    assert checked_afresh(binary) >= 5, "the first start runs the whole trial"
    assert checked_afresh(binary) == 0, "the next start remembers it"
    binary.write_text(binary.read_text() + "# changed\n")
    assert checked_afresh(binary) >= 5, "a changed binary is tried again"
    assert checked_afresh(binary) == 0
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert checked_afresh(binary) >= 5, "no cache folder to trust: every start runs the trial"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    failing = without_libx264(tmp_path / "bad")
    for _ in range(2):
        check._checked.clear()
        with pytest.raises(check.FFmpegUnusable):
            check.check_binary(str(failing))  # a refusal is never remembered


@pytest.mark.parametrize("command", START_COMMANDS)
@pytest.mark.parametrize("make, expected", [(old_ffmpeg, "6.1 or newer"), (without_libx264, "libx264")])
def test_start_up_refuses_an_unusable_ffmpeg_binary_in_one_line(command, make, expected, tmp_path):
    binary = make(tmp_path / "bin")
    env = {
        **os.environ,
        "FFMPEG_BINARY": str(binary),
        "DATA_DIR": str(tmp_path / "data"),
        "HOST": "127.0.0.1",
        "PORT": "1",
    }
    r = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = [line for line in (r.stderr + r.stdout).splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("Video Refresher cannot start: ffmpeg ") and expected in lines[0], lines


def without_setpriv(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def setpriv_before_2_33(folder: Path) -> Path:
    """setpriv learnt --pdeathsig in util-linux 2.33 (Ubuntu 18.04 has 2.31)."""
    folder.mkdir(parents=True)
    for name in ("prlimit", "chrt"):
        (folder / name).symlink_to(shutil.which(name))
    fake = folder / "setpriv"
    fake.write_text(
        f'#!/bin/sh\ncase " $* " in *" --pdeathsig "*)\n'
        f"  echo \"setpriv: unrecognized option '--pdeathsig'\" >&2\n"
        f"  echo \"Try 'setpriv --help' for more information.\" >&2; exit 1;;\nesac\n"
        f'exec {shutil.which("setpriv")} "$@"\n'
    )
    fake.chmod(0o755)
    return folder


@pytest.mark.parametrize("command", START_COMMANDS)
@pytest.mark.parametrize(
    "make, expected",
    [
        (
            without_setpriv,
            "setpriv is not on PATH: every ffmpeg is started through util-linux's setpriv, prlimit "
            "and chrt; install util-linux",
        ),
        (
            setpriv_before_2_33,
            "(setpriv: unrecognized option '--pdeathsig'); setpriv --pdeathsig needs util-linux 2.33 or newer",
        ),
    ],
)
def test_start_up_refuses_a_machine_without_the_wrappers_ffmpeg_is_started_through(command, make, expected, tmp_path):
    """Every ffmpeg is started through util-linux's setpriv, prlimit and
    chrt (refresher.media.ffmpeg.launch_command): without them, no start."""
    path = make(tmp_path / "bin")
    env = {
        **os.environ,
        "PATH": str(path),
        "FFMPEG_BINARY": FFMPEG,
        "DATA_DIR": str(tmp_path / "data"),
        "HOST": "127.0.0.1",
        "PORT": "1",
    }
    r = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = [line for line in (r.stderr + r.stdout).splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("Video Refresher cannot start: ") and expected in lines[0], lines


def distro_ffmpeg() -> str | None:
    """Debian's (or another distribution's) ffmpeg, if this machine has one."""
    for candidate in ("/usr/bin/ffmpeg", "/usr/local/bin/ffmpeg", shutil.which("ffmpeg")):
        if (
            candidate
            and os.access(candidate, os.X_OK)
            and os.path.realpath(candidate) != os.path.realpath(ffmpeg.bundled_binary())
        ):
            return candidate
    return None


@pytest.mark.skipif(distro_ffmpeg() is None, reason="no distribution ffmpeg on this machine")
def test_a_distro_ffmpeg_is_never_picked_up_and_is_judged_when_named(gunicorn_server):
    distro = distro_ffmpeg()
    # not named: the server runs the bundled build, whatever is on PATH
    server = gunicorn_server(FFMPEG_BINARY="", PATH=f"{Path(distro).parent}{os.pathsep}{os.environ['PATH']}")
    health = server.session.get(server.url + "/api/health").json()
    assert health["ffmpeg"] == check.check_binary(ffmpeg.bundled_binary()), health
    # named: accepted only if it passes the same check the service makes at start
    try:
        version = check.check_binary(distro)
    except check.FFmpegUnusable as exc:
        assert str(distro) in str(exc)
    else:
        assert version.startswith("ffmpeg version")


def test_the_suite_itself_uses_the_bundled_build_unless_told_otherwise():
    expected = ffmpeg.resolve_binary(os.environ.get("FFMPEG_BINARY"))
    assert FFMPEG == expected
    if not os.environ.get("FFMPEG_BINARY"):
        assert FFMPEG == ffmpeg.bundled_binary()
