"""Status-route latency while live progress streams are open.

With a job encoding, GET /api/jobs/<id> is timed from 20 concurrent pollers,
first with no Server-Sent Events stream open (baseline), then with --streams
streams open on the same server, in the same run.

    python bench/sse_status_latency.py [--streams 10] [--requests 400]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import tempfile
import threading
import time
from pathlib import Path

import requests

from _harness import Server, make_clip, summary


def poll(server, job_id: str, count: int, concurrency: int) -> list[float]:
    session_headers = dict(server.session.headers)
    local = threading.local()

    def one(_):
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.headers.update(session_headers)
        started = time.monotonic()
        r = local.session.get(f"{server.url}/api/jobs/{job_id}")
        assert r.status_code == 200
        return time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(count)))


def open_streams(server, job_id: str, n: int, stop: threading.Event) -> list[threading.Thread]:
    opened = threading.Barrier(n + 1)

    def listen():
        with requests.get(f"{server.url}/api/jobs/{job_id}/events", headers=dict(server.session.headers),
                          stream=True, timeout=120) as r:
            assert r.status_code == 200, r.text
            opened.wait()
            for _ in r.iter_lines():
                if stop.is_set():
                    return

    threads = [threading.Thread(target=listen, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    opened.wait()
    return threads


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--pollers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=120, help="length of the source clip")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="refresher-bench-sse-"))
    source = make_clip(work, "long.mp4", "1280x720", args.seconds)
    with Server(WEB_CONCURRENCY=2) as server:
        job_id = server.submit([source], variations=10)
        while server.job(job_id)["status"] != "processing":
            time.sleep(0.05)
        baseline = poll(server, job_id, args.requests, args.pollers)
        stop = threading.Event()
        open_streams(server, job_id, args.streams, stop)
        loaded = poll(server, job_id, args.requests, args.pollers)
        stop.set()
        server.session.post(f"{server.url}/api/jobs/{job_id}/cancel")

    print(f"GET /api/jobs/<id> with every core encoding, {args.pollers} concurrent pollers")
    print(f"  baseline  no SSE stream     : {summary(baseline)}   p99 {p99(baseline) * 1000:6.1f} ms")
    print(f"  service   {args.streams:2d} SSE streams open : {summary(loaded)}   p99 {p99(loaded) * 1000:6.1f} ms")
    print(f"  p99 ratio                   : {p99(loaded) / p99(baseline):.2f}×")


if __name__ == "__main__":
    main()
