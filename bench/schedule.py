"""What the order of a job's variations costs, without the noise of a busy machine.

The 2 × 3 job of `bench.throughput` (10 s 640×360 and 10 s 1280×720, with
audio): each of its six ffmpeg commands is run alone and timed in CPU
seconds (user + system, far steadier than wall time on a shared machine),
and each order below is list-scheduled on the cores with those times (a
free core takes the next command), as the supervisor's claims do:

* by round: every source's second variation before any third (the order
  before the claims changed), the costliest first within a round;
* first round, then costliest: every source's first variation, then the
  rest costliest first (the store's order now);
* costliest first: the perfect replay of `bench.throughput`.

    python -m bench.schedule [--seconds 10] [--seeds 4] [--cores 2]
"""

from __future__ import annotations

import argparse
import heapq
import os
import resource
import statistics
import subprocess

from bench._harness import FFMPEG, make_clip, work_dir

from refresher.media import effects as fx
from refresher.media import ffmpeg

ORDERS = {
    "by round": lambda i: (i["index"], -i["cost"], i["position"]),
    "first round, then costliest": lambda i: (i["index"] > 1, -i["cost"], i["index"], i["position"]),
    "costliest first": lambda i: (-i["cost"], i["index"], i["position"]),
}


def cpu_seconds(cmd: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def makespan(durations: list[float], cores: int) -> float:
    free = [0.0] * cores
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--variations", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    work = work_dir("refresher-bench-schedule-")
    sources = [
        make_clip(work, "a-640x360.mp4", "640x360", args.seconds),
        make_clip(work, "b-1280x720.mp4", "1280x720", args.seconds),
    ]
    ratios: dict[str, list[float]] = {name: [] for name in ORDERS}
    print(
        f"job of 2 sources × {args.variations} variations ({args.seconds:g} s 640×360 + 1280×720), "
        f"each command's CPU time list-scheduled on {args.cores} cores; baseline = costliest first"
    )
    for seed in range(args.seeds):
        items = []
        for position, (source, row) in enumerate(
            zip(sources, fx.draw_job_effects(f"schedule-{seed}", 2, args.variations), strict=True)
        ):
            info = ffmpeg.probe(FFMPEG, source)
            frames = ffmpeg.count_video_frames(FFMPEG, source)
            for index, effects in enumerate(row, start=1):
                cmd = fx.encode_command(
                    FFMPEG,
                    source,
                    work / f"out-{position}-{index}.mp4",
                    effects,
                    info.width,
                    info.height,
                    info.has_audio,
                    info.audio_codec,
                    duration=info.duration,
                    video_frames=frames,
                )
                items.append(
                    {
                        "index": index,
                        "position": position,
                        "cpu": cpu_seconds(cmd),
                        "cost": fx.estimated_cost(effects, info.width, info.height, info.duration),
                    }
                )
        best = makespan([i["cpu"] for i in sorted(items, key=ORDERS["costliest first"])], args.cores)
        shown = []
        for name, key in ORDERS.items():
            span = makespan([i["cpu"] for i in sorted(items, key=key)], args.cores)
            ratios[name].append(span / best)
            shown.append(f"{name} {span:5.2f} s ({span / best:.3f}×)")
        print(f"  seed {seed}: " + ";  ".join(shown))
    for name, values in ratios.items():
        kind = "baseline" if name == "costliest first" else "service " if name.startswith("first") else "before  "
        print(
            f"  {kind}  {name:28s}: median {statistics.median(values):.3f}×  "
            f"(from {min(values):.3f}× to {max(values):.3f}×)"
        )


if __name__ == "__main__":
    main()
