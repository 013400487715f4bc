"""Latency of GET /api/jobs/<id> while every core encodes, and with live
progress streams open.

--pollers clients each poll a running job's status every --interval seconds
(0 = flat out) over their own keep-alive connection. Three phases, one run,
one server:

1. baseline: the same polling while nothing encodes;
2. every core encoding (a long job with many variations running);
3. the same, plus --streams Server-Sent Events streams open on the job.

    python -m bench.status_latency [--pollers 20] [--interval 0.25] [--streams 10] [--requests 1000]
Target: p99 under 100 ms with 20 concurrent pollers while encoding.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import threading
import time

import requests

from bench._harness import Server, make_clip, summary, work_dir


def poll(server, job_id: str, count: int, pollers: int, interval: float) -> list[float]:
    headers = dict(server.session.headers)
    per_poller = max(1, count // pollers)

    def poller(index: int) -> list[float]:
        session = requests.Session()
        session.headers.update(headers)
        times = []
        time.sleep(interval * index / pollers)  # spread the pollers over the interval
        for _ in range(per_poller):
            started = time.monotonic()
            r = session.get(f"{server.url}/api/jobs/{job_id}")
            elapsed = time.monotonic() - started
            assert r.status_code == 200
            times.append(elapsed)
            time.sleep(max(0.0, interval - elapsed))
        return times

    with concurrent.futures.ThreadPoolExecutor(pollers) as pool:
        return [t for times in pool.map(poller, range(pollers)) for t in times]


def open_streams(server, job_id: str, n: int, stop: threading.Event) -> None:
    opened = threading.Barrier(n + 1)

    def listen():
        with requests.get(
            f"{server.url}/api/jobs/{job_id}/events", headers=dict(server.session.headers), stream=True, timeout=300
        ) as r:
            assert r.status_code == 200, r.text
            opened.wait()
            for _ in r.iter_lines():
                if stop.is_set():
                    return

    for _ in range(n):
        threading.Thread(target=listen, daemon=True).start()
    opened.wait()


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pollers", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=120, help="length of the source clip")
    args = parser.parse_args()
    work = work_dir("refresher-bench-status-")
    source = make_clip(work, "long.mp4", "1280x720", args.seconds)
    with Server() as server:
        idle_job = server.wait(server.submit([make_clip(work, "short.mp4", "1280x720", 1)], variations=10))
        idle = poll(server, idle_job["jobId"], args.requests, args.pollers, args.interval)
        job_id = server.submit([source], variations=10)
        while server.job(job_id)["status"] != "processing":
            time.sleep(0.05)
        busy = poll(server, job_id, args.requests, args.pollers, args.interval)
        stop = threading.Event()
        open_streams(server, job_id, args.streams, stop)
        streaming = poll(server, job_id, args.requests, args.pollers, args.interval)
        still_running = server.job(job_id)["status"] == "processing"
        stop.set()
        server.session.post(f"{server.url}/api/jobs/{job_id}/cancel")
    assert still_running, "the job finished before the measurement did: use a longer --seconds"
    pace = f"every {args.interval:g} s" if args.interval else "flat out"
    print(f"GET /api/jobs/<id>, {args.pollers} concurrent pollers polling {pace}")
    for label, values in (
        ("baseline  nothing encoding         ", idle),
        ("service   every core encoding      ", busy),
        (f"service   encoding + {args.streams:2d} SSE streams", streaming),
    ):
        print(f"  {label}: {summary(values)}   p99 {p99(values) * 1000:6.1f} ms")
    print(f"  p99 ratio encoding/baseline                : {p99(busy) / p99(idle):.2f}×")


if __name__ == "__main__":
    main()
