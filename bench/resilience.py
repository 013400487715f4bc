"""Shutdown and recovery times on a real gunicorn server under load.

1. SIGTERM to gunicorn's master while every encode worker runs ffmpeg: time
   until the master has exited and no process of the server is left.
   Baseline, same run: the same SIGTERM to an idle server.
2. kill -9 of the supervisor while a job runs: time until a new supervisor
   answers (health 200 with "running"), and until the job completes.

    python -m bench.resilience
Targets: every process gone well within 30 s; replaced within 10 s.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import time

from bench._harness import Server, make_clip, work_dir


def descendants_alive(root_pid: int, tag: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
                state = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if f"BENCH_TAG={tag}".encode() in env and state != "Z":
                found.append(int(entry))
    return found


def shutdown_time(server: Server, tag: str) -> float:
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(60)
    while descendants_alive(server.proc.pid, tag):
        time.sleep(0.01)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="length of the source clip")
    args = parser.parse_args()
    work = work_dir("refresher-bench-res-")
    source = make_clip(work, "long.mp4", "1280x720", args.seconds)

    idle_tag, busy_tag = "idle-" + str(os.getpid()), "busy-" + str(os.getpid())
    server = Server(work / "idle", ENCODE_WORKERS=2, BENCH_TAG=idle_tag).__enter__()
    idle = shutdown_time(server, idle_tag)
    server.log.close()

    server = Server(work / "busy", ENCODE_WORKERS=2, BENCH_TAG=busy_tag).__enter__()
    job_id = server.submit([source], variations=6)
    while server.job(job_id)["overallProgress"] < 5:
        time.sleep(0.05)
    busy = shutdown_time(server, busy_tag)
    server.log.close()

    with Server(ENCODE_WORKERS=2) as server:
        job_id = server.submit([source], variations=4)
        while server.job(job_id)["overallProgress"] < 5:
            time.sleep(0.05)
        log = (server.data_dir / "server.log").read_text()
        old = int(re.findall(r"supervisor (\d+) running", log)[-1])
        killed = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while True:
            health = server.session.get(server.url + "/api/health").json()
            log = (server.data_dir / "server.log").read_text()
            pids = [int(p) for p in re.findall(r"supervisor (\d+) running", log)]
            if health["supervisor"] == "running" and pids[-1] != old:
                break
            time.sleep(0.01)
        replaced = time.monotonic() - killed
        job = server.wait(job_id)
        completed = time.monotonic() - killed
        assert job["status"] == "completed", job

    print("shutdown (SIGTERM to the master → every process of the server gone)")
    print(f"  baseline  idle server                 : {idle:6.2f} s")
    print(f"  service   2 encodes running           : {busy:6.2f} s   ({busy / idle:.2f}× idle)")
    print("supervisor killed with SIGKILL while a job runs")
    print(f"  replaced (health running again)       : {replaced:6.2f} s")
    print(f"  job completed after the kill          : {completed:6.2f} s")


if __name__ == "__main__":
    main()
