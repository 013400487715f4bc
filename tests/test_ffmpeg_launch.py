"""Every ffmpeg the service starts has, from its first instruction, what the
service relies on: it dies when the process that started it dies; a probe or
thumbnail cannot map more than PROBE_MEMORY_LIMIT; an encode runs at idle
priority, every thread of it.

The real ffmpeg is given a FIFO as its input: it blocks opening it, before it
has read a byte or started a thread, and is looked at there."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from refresher.media import ffmpeg

from .conftest import FFMPEG, ROOT, ffmpeg_pids_writing_under
from .support.servers import wait_until

CALLS = {
    "probe": "ffmpeg.probe(FFMPEG, SOURCE)",
    "thumbnail": "ffmpeg.make_thumbnail(FFMPEG, SOURCE, OUT / 'thumbnail.webp', 10.0)",
    "frame count": "ffmpeg.count_video_frames(FFMPEG, SOURCE)",
    "encode": "ffmpeg.run_ffmpeg([FFMPEG, '-hide_banner', '-i', f'file:{SOURCE}', '-c:v', 'libx264', "
    "'-f', 'mp4', '-progress', 'pipe:1', '-nostats', str(OUT / 'out.mp4')])",
}
# what each call's ffmpeg must have: its address-space ceiling, its scheduling policy
EXPECTED = {
    "probe": (ffmpeg.PROBE_MEMORY_LIMIT, os.SCHED_OTHER),
    "thumbnail": (ffmpeg.PROBE_MEMORY_LIMIT, os.SCHED_OTHER),
    "frame count": (None, os.SCHED_OTHER),
    "encode": (None, os.SCHED_IDLE),
}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children_running(parent: int, binary: str) -> list[int]:
    """Children of `parent` that run `binary` (past the wrappers' exec)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            exe = os.readlink(f"/proc/{entry}/exe")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if ppid == parent and exe == os.path.realpath(binary):
            found.append(int(entry))
    return found


def address_space_limit(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            soft = line.split()[3]
            return None if soft == "unlimited" else int(soft)
    raise AssertionError("no address-space line")


@pytest.mark.parametrize("call", list(CALLS))
def test_every_ffmpeg_starts_with_its_limits_and_dies_with_its_parent(tmp_path, call):
    source = tmp_path / "source.mov"
    os.mkfifo(source)
    # The caller has threads, as every process of the service that starts ffmpeg does.
    code = (
        f"import threading, time\nfrom pathlib import Path\nfrom refresher.media import ffmpeg\n"
        f"FFMPEG, SOURCE, OUT = {FFMPEG!r}, Path({str(source)!r}), Path({str(tmp_path)!r})\n"
        f"for _ in range(4): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        f"{CALLS[call]}\n"
    )
    caller = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    pid = None
    try:
        [pid] = wait_until(lambda: children_running(caller.pid, FFMPEG), timeout=20, interval=0.01)
        limit, policy = EXPECTED[call]
        assert address_space_limit(pid) == limit
        threads = os.listdir(f"/proc/{pid}/task")
        assert [os.sched_getscheduler(int(tid)) for tid in threads] == [policy] * len(threads)
        assert caller.poll() is None, "the caller is still waiting for it"
        caller.kill()
        caller.wait()
        wait_until(lambda: not alive(pid), timeout=5, interval=0.01)
    finally:
        caller.kill()
        caller.wait()
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_every_thread_of_a_service_encode_runs_at_idle_priority(make_service, media):
    """ffmpeg 7 runs demux, decode, filters, encode and mux on threads of
    their own: each one inherits SCHED_IDLE from the process's start."""
    svc = make_service(encode_workers=1)
    job_id = svc.submit([media["slow"]], variations=1)["jobId"]
    folder = svc.settings.data_dir / "jobs" / job_id
    [pid] = wait_until(lambda: ffmpeg_pids_writing_under(folder))
    threads = wait_until(lambda: len(found := os.listdir(f"/proc/{pid}/task")) >= 4 and found, interval=0.01)
    assert {os.sched_getscheduler(int(tid)) for tid in threads} == {os.SCHED_IDLE}
    assert svc.post(f"/api/jobs/{job_id}/cancel").status_code in (200, 202)
    assert svc.wait(job_id)["status"] == "cancelled"
    wait_until(lambda: not alive(pid), timeout=10)


def test_where_the_kernel_refuses_sched_idle_encodes_run_at_nice_19(tmp_path):
    """Some sandboxes refuse SCHED_IDLE: chrt then fails before it runs
    anything, and encodes are started at nice 19 instead."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("setpriv", "prlimit", "nice"):
        (folder / name).symlink_to(shutil.which(name))
    refusing = folder / "chrt"
    refusing.write_text('#!/bin/sh\necho "chrt: failed to set pid 0\'s policy: Operation not permitted" >&2\nexit 1\n')
    refusing.chmod(0o755)
    code = (
        "import os, subprocess, sys\nfrom refresher.media import ffmpeg\n"
        "command = ffmpeg.launch_command([sys.executable, '-c', "
        "'import os; print(os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))'], idle=True)\n"
        "print(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": str(folder), "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(os.SCHED_OTHER), "19"]
