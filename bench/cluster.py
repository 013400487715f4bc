"""Many hosts on one PostgreSQL: what the split into web and worker
processes costs, on this machine's cores.

The cluster: a web process that encodes nothing (gunicorn, ENCODE_WORKERS=0)
and two worker processes (`python -m refresher.worker`, ENCODE_WORKERS=1
each, their own HOST_ID), sharing one DATA_DIR and one PostgreSQL — as the
Procfile runs them, all on this machine. Three measurements:

1. throughput: the job of bench/throughput.py (2 sources × 3 variations, 10 s
   640×360 + 10 s 1280×720), upload → the job's finishedAt; baseline: one
   host with ENCODE_WORKERS=2 on SQLite, alternated with the cluster round by
   round;
2. GET /api/jobs/<id> latency, 20 pollers every 0.25 s, while both workers
   encode; baseline: the same polling while nothing encodes;
3. cancel across hosts: POST /api/jobs/<id>/cancel to the web process, until
   the answer is in and no ffmpeg of the job is left on the worker hosts,
   with one encode running on each; baselines: ffmpeg's own reaction to `q`,
   alone and two at once (both worker hosts run on this machine's cores).

    python -m bench.cluster [--rounds 3] [--seconds 10] [--requests 1000] [--cancels 15]
                            [--only throughput,status,cancel] [--before DIR]
--before DIR: a checkout of another commit (e.g. `git worktree add DIR main`);
the status and cancel measurements then run on its code and on this one,
alternately, --rounds times, and are reported side by side.
Targets: throughput ≤ 1.10× the single host's time; status p99 < 100 ms;
cancel p50 < 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path


from bench._harness import PASSWORD, ROOT, Postgres, Server, make_clip, summary, work_dir
from bench.cancel_latency import baseline as q_baseline
from bench.cancel_latency import ffmpeg_running_under
from bench.status_latency import p99, poll
from bench.throughput import run_server
from tests.support.servers import WorkerProcess


class Cluster:
    """A web process and two worker hosts on one PostgreSQL database."""

    def __init__(self, database_url: str, data_dir: Path, root: Path = ROOT):
        common = {"DATABASE_URL": database_url}
        self.workers = [
            WorkerProcess(
                data_dir,
                data_dir,
                root,
                AUTH_PASSWORD=PASSWORD,
                HOST_ID=f"bench-worker.{i + 1}",
                ENCODE_WORKERS=1,
                **common,
            )
            for i in range(2)
        ]
        self.web = Server(data_dir, root, ENCODE_WORKERS=0, **common)

    def __enter__(self) -> Server:
        for worker in self.workers:
            worker.__enter__()
        self.web.__enter__()  # healthy once a worker host has reported in
        deadline = time.monotonic() + 60
        while len(self.web.session.get(self.web.url + "/api/health").json()["hosts"]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "the worker hosts did not report in; see the worker logs in " + str(self.web.data_dir)
                )
            time.sleep(0.1)
        return self.web

    def __exit__(self, *exc) -> None:
        self.web.__exit__(*exc)
        for worker in self.workers:
            worker.__exit__(*exc)


def flags_set(web: Server, database_url: str, job_id: str, found: list[float]):
    """A thread, to start with the moment of the request, that appends to `found` the time until every
    worker host's control block flags the job as cancelled (what the cancel
    has to carry across hosts; the rest is ffmpeg stopping)."""
    import psycopg

    from refresher.engine.control import ControlBlock

    with psycopg.connect(database_url) as conn:
        seq = conn.execute("SELECT seq FROM jobs WHERE id = %s", (job_id,)).fetchone()[0]
    blocks = [ControlBlock(p) for p in sorted((web.data_dir / "run").glob("control-*"))]

    def watch(started: float):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(b.is_cancelled(seq) for b in blocks):
                found.append(time.monotonic() - started)
                return
            time.sleep(0.0005)

    def start(started: float) -> threading.Thread:
        thread = threading.Thread(target=watch, args=(started,), daemon=True)
        thread.start()
        return thread

    return start


def cancel_across_hosts(
    web: Server, source: Path, runs: int, database_url: str | None = None, flagged: list[float] | None = None
) -> list[float]:
    """Request → answer, and every ffmpeg of the job gone, with one encode on each worker host.
    With `flagged`: also request → every host's cancel flag set."""
    times = []
    for i in range(runs):
        job_id = web.submit([source], variations=4)
        folder = web.data_dir / "jobs" / job_id
        deadline = time.monotonic() + 60
        while len(ffmpeg_running_under(folder)) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the two worker hosts did not both start an encode")
            time.sleep(0.02)
        time.sleep(0.3 + 0.037 * i)  # land at different points of the workers' cycles
        watch = flags_set(web, database_url, job_id, flagged) if flagged is not None else None
        started = time.monotonic()
        watcher = watch(started) if watch else None
        r = web.session.post(f"{web.url}/api/jobs/{job_id}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        while ffmpeg_running_under(folder):
            if time.monotonic() - started > 30:
                raise RuntimeError("ffmpeg still running 30 s after the cancel")
            time.sleep(0.005)
        times.append(time.monotonic() - started)
        if watcher is not None:
            watcher.join()
    return times


def latency(
    postgres: Postgres, work: Path, root: Path, name: str, long_source: Path, args, parts: set[str]
) -> tuple[list[float], list[float], list[float], list[float], bool]:
    """Status polling (idle, then both hosts encoding) and cross-host cancels
    on a fresh cluster running the code in `root`."""
    idle, busy, cancels, flagged, still_running = [], [], [], [], True
    data_dir = work / f"cluster-{name}"
    data_dir.mkdir()
    database_url = postgres.new_database(name)
    with Cluster(database_url, data_dir, root) as web:
        if "status" in parts:
            idle_job = web.wait(web.submit([make_clip(work, "short.mp4", "1280x720", 1)], variations=2))
            idle = poll(web, idle_job["jobId"], args.requests, args.pollers, args.interval)
            job_id = web.submit([long_source], variations=10)
            while len(ffmpeg_running_under(web.data_dir / "jobs" / job_id)) < 2:
                time.sleep(0.05)
            busy = poll(web, job_id, args.requests, args.pollers, args.interval)
            still_running = len(ffmpeg_running_under(web.data_dir / "jobs" / job_id)) == 2
            web.session.post(f"{web.url}/api/jobs/{job_id}/cancel")
        if "cancel" in parts:
            cancels = cancel_across_hosts(web, long_source, args.cancels, database_url, flagged)
    return idle, busy, cancels, flagged, still_running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10, help="length of the throughput job's clips")
    parser.add_argument("--variations", type=int, default=3)
    parser.add_argument("--pollers", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--cancels", type=int, default=15)
    parser.add_argument(
        "--long-seconds", type=float, default=120, help="length of the clip encoded while polling and cancelling"
    )
    parser.add_argument(
        "--only",
        default="throughput,status,cancel",
        help="which measurements to make, comma-separated (default: all three)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of another commit: compare its status and cancel figures with this one's",
    )
    args = parser.parse_args()
    parts = set(args.only.split(","))
    work = work_dir("refresher-bench-cluster-")
    sources = [
        make_clip(work, "a-640x360.mp4", "640x360", args.seconds),
        make_clip(work, "b-1280x720.mp4", "1280x720", args.seconds),
    ]
    long_source = make_clip(work, "long.mp4", "1280x720", args.long_seconds, cancelled=True)
    single, split, idle, busy, cancels, flagged = [], [], [], [], [], []
    still_running = True
    with Postgres() as postgres:
        for round_ in range(args.rounds if "throughput" in parts else 0):
            with Server(work / f"single-{round_}", ENCODE_WORKERS=2) as server:
                single.append(run_server(server, sources, args.variations)[0])
            data_dir = work / f"cluster-{round_}"
            data_dir.mkdir()
            with Cluster(postgres.new_database(f"throughput_{round_}"), data_dir) as web:
                split.append(run_server(web, sources, args.variations)[0])
        if parts & {"status", "cancel"} and args.before is None:
            idle, busy, cancels, flagged, still_running = latency(
                postgres, work, ROOT, "latency", long_source, args, parts
            )
        elif parts & {"status", "cancel"}:
            compared = {"before": ([], [], [], []), "after": ([], [], [], [])}
            for round_ in range(args.rounds):
                for label, root in (("before", args.before.resolve()), ("after", ROOT)):
                    found = latency(postgres, work, root, f"{label}_{round_}", long_source, args, parts)
                    for kept, new in zip(compared[label], found, strict=False):
                        kept.extend(new)
                    still_running = still_running and found[4]
    assert still_running, "the job finished before the measurement did: use a longer --long-seconds"
    print(f"web (ENCODE_WORKERS=0) + 2 worker hosts (ENCODE_WORKERS=1 each) on PostgreSQL, {os.cpu_count()} cores")
    if single:
        one, two = statistics.median(single), statistics.median(split)
        print(
            f"job of 2 sources × {args.variations} variations ({args.seconds:g} s 640×360 + 1280×720), "
            f"upload → finishedAt, median of {args.rounds}, alternated"
        )
        print(f"  baseline  one host, ENCODE_WORKERS=2, SQLite : {one:6.2f} s   {[round(t, 2) for t in single]}")
        print(f"  service   web + 2 worker hosts, PostgreSQL   : {two:6.2f} s   {[round(t, 2) for t in split]}")
        print(f"  ratio cluster/one host                       : {two / one:.2f}×  (target ≤ 1.10)")
    if idle:
        print(f"GET /api/jobs/<id>, {args.pollers} pollers every {args.interval:g} s, through the web process")
        print(f"  baseline  nothing encoding    : {summary(idle)}   p99 {p99(idle) * 1000:6.1f} ms")
        print(f"  service   both hosts encoding : {summary(busy)}   p99 {p99(busy) * 1000:6.1f} ms  (target < 100 ms)")
    if args.before is not None:
        print(f"before = {args.before}, after = this checkout; fresh clusters, alternated, {args.rounds} round(s)")
        for label in ("before", "after"):
            idle, busy, cancels, flagged = compared[label]
            if idle:
                print(f"GET /api/jobs/<id>, {args.pollers} pollers every {args.interval:g} s, {label}")
                print(f"  {label:6}  nothing encoding    : {summary(idle)}   p99 {p99(idle) * 1000:6.1f} ms")
                print(f"  {label:6}  both hosts encoding : {summary(busy)}   p99 {p99(busy) * 1000:6.1f} ms")
            if cancels:
                print(f"cancel across hosts, {label}")
                print(
                    f"  {label:6}  POST …/cancel       : {summary(cancels)}   "
                    f"p50 {statistics.median(cancels) * 1000:.0f} ms, max {max(cancels) * 1000:.0f} ms"
                )
                print(f"  {label:6}  … every flag set   : {summary(flagged)}")
        cancels, flagged = compared["after"][2:]
    if cancels:
        base_q = q_baseline(long_source, args.cancels)
        both_q = q_baseline(long_source, args.cancels, together=2)
        print("cancel through the web process → answer, no ffmpeg of the job left on either worker host")
        print(f"  baseline  ffmpeg alone, q → exit : {summary(base_q)}")
        print(f"  baseline  two at once (the hosts share these cores) : {summary(both_q)}")
        print(f"  service   POST …/cancel          : {summary(cancels)}  (target median < 500 ms)")
        print(f"  p50 {statistics.median(cancels) * 1000:.0f} ms, max {max(cancels) * 1000:.0f} ms")
        print(f"  service   request → every worker host's cancel flag set : {summary(flagged)}")


if __name__ == "__main__":
    main()
