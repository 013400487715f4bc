"""What the server itself costs around the encodes, on a real gunicorn with
SQLite: the CPU time of its own processes (web workers, supervisor, encode
workers; ffmpeg not counted) while idle and while four clients poll a job's
status every 0.5 s, per second and per poll; how long a job waits between
being stored and starting; and how long a two-video upload takes to be
answered.

Baselines, from the same run: the gunicorn master's idle CPU (a process that
only wakes to watch its workers); a request for an unknown route (gunicorn
and Flask alone, answered 404); the intake's ffmpeg calls for the two videos
(probe, frame count, thumbnail) run one after another.

    python -m bench.server_cost [--rounds 3] [--seconds 10] [--source-seconds 10] [--before DIR]

--before DIR: a checkout of another commit (e.g. `git worktree add DIR
<commit>`), measured in the same run, alternated with this one.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import threading
import time
from pathlib import Path

from bench._harness import FFMPEG, ROOT, Server, make_clip, work_dir

from refresher.media import ffmpeg

_HZ = os.sysconf("SC_CLK_TCK")


def _kind(pid: int, session: int) -> str:
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    if b"refresher.engine" in command:
        return "supervisor"
    if b"spawn_main" in command:
        return "encode workers"
    if pid == session:
        return "gunicorn master"
    return "web workers" if b"gunicorn" in command else "other"


def cpu_by_kind(session: int) -> dict[str, float]:
    """CPU seconds used so far by each kind of the server's processes (its own, not its children's)."""
    found: dict[str, float] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != session:
                continue
            kind = _kind(int(entry), session)
        except (OSError, IndexError):
            continue
        found[kind] = found.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / _HZ
    return found


def _used(before: dict, after: dict) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if k != "other"}


def measure(root: Path, sources: list[Path], small: Path, seconds: float) -> dict[str, float]:
    data = work_dir("refresher-bench-cost-")
    figures = {}
    with Server(data_dir=data, root=root) as server:
        session = os.getsid(server.proc.pid)
        time.sleep(3)  # started: workers spawned, first looks done
        before = cpu_by_kind(session)
        time.sleep(seconds)
        for kind, used in _used(before, cpu_by_kind(session)).items():
            figures[f"idle: {kind}, ms CPU per s"] = used / seconds * 1000
        # a two-video upload, answered
        uploads, gaps = [], []
        for _ in range(3):
            started = time.monotonic()
            job_id = server.submit(sources, variations=1)
            uploads.append(time.monotonic() - started)
            server.wait(job_id)
        for _ in range(5):
            job_id = server.submit([small], variations=1)
            server.wait(job_id)
            with sqlite3.connect(data / "refresher.db") as db:
                created, began = db.execute(
                    "SELECT created_at, started_at FROM jobs WHERE id = ?", (job_id,)
                ).fetchone()
            gaps.append(began - created)
        figures["two-video upload answered, ms"] = statistics.median(uploads) * 1000
        figures["job stored → started, ms"] = statistics.median(gaps) * 1000
        # four clients polling a finished job every 0.5 s
        done = threading.Event()
        polls = [0]

        def poll() -> None:
            while not done.wait(0.5):
                server.job(job_id)
                polls[0] += 1

        clients = [threading.Thread(target=poll) for _ in range(4)]
        before = cpu_by_kind(session)
        for client in clients:
            client.start()
        time.sleep(seconds)
        done.set()
        for client in clients:
            client.join()
        used = _used(before, cpu_by_kind(session))
        figures["polled: web workers, ms CPU per poll"] = used.get("web workers", 0.0) / max(1, polls[0]) * 1000
        figures["polled: supervisor, ms CPU per s"] = used.get("supervisor", 0.0) / seconds * 1000
        before = cpu_by_kind(session)
        for _ in range(200):
            server.session.get(server.url + "/api/no-such-route")
        figures["floor: web workers, ms CPU per 404"] = (
            (cpu_by_kind(session)["web workers"] - before["web workers"]) / 200 * 1000
        )
    return figures


def intake_alone(sources: list[Path], folder: Path) -> float:
    """The intake's ffmpeg calls for `sources`, one after another, in ms."""
    started = time.monotonic()
    for n, source in enumerate(sources):
        info = ffmpeg.probe(FFMPEG, source)
        ffmpeg.count_video_frames(FFMPEG, source)
        if n == 0:
            ffmpeg.make_thumbnail(FFMPEG, source, folder / "thumbnail.webp", info.duration)
    return (time.monotonic() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--before", type=Path, help="a checkout of another commit, measured alternately")
    parser.add_argument("--source-seconds", type=float, default=10, help="length of the two uploaded videos")
    args = parser.parse_args()
    work = work_dir("refresher-bench-cost-media-")
    sources = [
        make_clip(work, "a-640x360.mp4", "640x360", args.source_seconds),
        make_clip(work, "b-1280x720.mp4", "1280x720", args.source_seconds),
    ]
    small = make_clip(work, "small.mp4", "320x240", 1)
    runs = [("before", args.before.resolve())] if args.before else []
    runs.append(("service", ROOT))
    results: dict[str, list[dict]] = {label: [] for label, _ in runs}
    alone = []
    for _ in range(args.rounds):
        for label, root in runs:
            results[label].append(measure(root, sources, small, args.seconds))
        alone.append(intake_alone(sources, work))

    def median(label: str, name: str) -> float:
        return statistics.median(r.get(name, 0.0) for r in results[label])

    baselines = {
        "idle: supervisor, ms CPU per s": (
            "the gunicorn master, idle",
            median("service", "idle: gunicorn master, ms CPU per s"),
        ),
        "polled: web workers, ms CPU per poll": (
            "a 404, gunicorn and Flask alone",
            median("service", "floor: web workers, ms CPU per 404"),
        ),
        "two-video upload answered, ms": ("its ffmpeg calls, one after another", statistics.median(alone)),
    }
    print(
        f"the server's own cost (SQLite, gunicorn as the Procfile starts it), median of {args.rounds}"
        + (f"; before = {args.before}" if args.before else "")
    )
    for name in (
        "idle: supervisor, ms CPU per s",
        "idle: web workers, ms CPU per s",
        "polled: supervisor, ms CPU per s",
        "polled: web workers, ms CPU per poll",
        "two-video upload answered, ms",
        "job stored → started, ms",
    ):
        if name in baselines:
            what, value = baselines[name]
            print(f"  baseline  {name:<38} {value:8.2f}   ({what})")
        if args.before:
            print(f"  before    {name:<38} {median('before', name):8.2f}")
        print(f"  service   {name:<38} {median('service', name):8.2f}")


if __name__ == "__main__":
    main()
