"""What ENCODE_WORKERS does to a job's time.

The same job — 2 sources × 3 variations of 10 s 640×360 clips — goes through a
real gunicorn server started with each pool size in turn, from the start of
the upload to `completed`. Baseline: ENCODE_WORKERS=1, in the same run.

    python -m bench.encode_workers [--workers 1,2,4] [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench._harness import Server, make_clip, work_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = work_dir("refresher-bench-ew-")
    sources = [
        make_clip(work, "first.mp4", "640x360", args.seconds),
        make_clip(work, "second.mp4", "640x360", args.seconds),
    ]
    results = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        times = []
        with Server(ENCODE_WORKERS=workers) as server:
            for _ in range(args.rounds):
                started = time.monotonic()
                job = server.wait(server.submit(sources, variations=3))
                assert job["status"] == "completed", job
                times.append(time.monotonic() - started)
        results[workers] = statistics.median(times)
    base = results[min(results)]
    print(f"job of 2 × 3 variations of {args.seconds:g} s 640×360 clips, upload → completed, median of {args.rounds}")
    for workers, seconds in results.items():
        label = "baseline" if workers == min(results) else "service "
        print(
            f"  {label}  ENCODE_WORKERS={workers} : {seconds:6.2f} s   ({base / seconds:.2f}× the speed of "
            f"{min(results)} worker)"
        )


if __name__ == "__main__":
    main()
