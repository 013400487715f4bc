"""Throughput of a real job, and what the server adds around ffmpeg.

A job of 2 sources × 3 variations (10 s 640×360 and 10 s 1280×720, with audio)
goes through a real gunicorn server, from the start of the upload until the
job is `completed`. In the same run, with the same binary:

* reference: the reference pipeline (rotate + eq, -threads 4), one variation
  at a time — what the product ran before;
* replay: the server's own six ffmpeg commands, rebuilt from the effects the
  job reports, run with a perfect schedule (longest first, one per core);
* replay in the service's order: the same commands, one per core, in the
  order the service hands them out (one variation of every source before the
  second of any, the costliest first among equals: balanced cancels). The
  service against this one is what the service adds around ffmpeg; this one
  against the perfect replay is what the balanced order costs;
* the perfect replay once more: how far two runs of the very same commands
  differ on this machine, the noise every other ratio carries.

    python -m bench.throughput [--seconds 10] [--rounds 1] [--pollers 4]
Targets: reference / server ≥ 1.5; server / replay ≤ 1.05 with four clients
polling the job's status every 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

from bench._harness import FFMPEG, Server, make_clip, work_dir
from bench.effects_cost import reference_command

from refresher.media import effects as fx
from refresher.media import ffmpeg


def run_reference(sources: list[Path], variations: int, out: Path) -> float:
    started = time.monotonic()
    for source in sources:
        for i in range(variations):
            subprocess.run(
                reference_command(source, out / f"ref-{source.stem}-{i}.mp4"),
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
    return time.monotonic() - started


def run_replay(commands: list[list[str]], slots: int) -> float:
    """Run commands `slots` at a time, longest first (they are sorted by the caller)."""
    pending = list(commands)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not pending:
                    return
                cmd = pending.pop(0)
            subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(slots)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started


def run_server(server: Server, sources: list[Path], variations: int, pollers: int = 0) -> tuple[float, dict]:
    """Upload start → the job's own finishedAt, with `pollers` clients asking
    for the job's status every 0.5 s, as open pages and scripts do."""
    started = time.time()
    job_id = server.submit(sources, variations=variations)
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.5):
            server.job(job_id)

    clients = [threading.Thread(target=poll, daemon=True) for _ in range(pollers)]
    for client in clients:
        client.start()
    try:
        while True:
            job = server.job(job_id)
            if job["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.5)
    finally:
        done.set()
        for client in clients:
            client.join()
    assert job["status"] == "completed", job
    finished = datetime.fromisoformat(job["finishedAt"].replace("Z", "+00:00")).timestamp()
    return finished - started, job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variations", type=int, default=3)
    parser.add_argument("--pollers", type=int, default=4, help="clients polling the job's status every 0.5 s")
    args = parser.parse_args()
    work = work_dir("refresher-bench-tp-")
    sources = [
        make_clip(work, "a-640x360.mp4", "640x360", args.seconds),
        make_clip(work, "b-1280x720.mp4", "1280x720", args.seconds),
    ]
    slots = os.cpu_count() or 1
    refs, servers, replays, in_order, again = [], [], [], [], []
    with Server() as server:
        for _ in range(args.rounds):
            refs.append(run_reference(sources, args.variations, work))
            elapsed, job = run_server(server, sources, args.variations, args.pollers)
            servers.append(elapsed)
            commands = []
            for f, source in zip(job["files"], sources, strict=True):
                info = ffmpeg.probe(FFMPEG, source)
                for o in f["outputs"]:
                    cmd = fx.encode_command(
                        FFMPEG,
                        source,
                        work / f"replay-{o['id']}.mp4",
                        o["effects"],
                        info.width,
                        info.height,
                        info.has_audio,
                        info.audio_codec,
                        duration=info.duration,
                        video_frames=ffmpeg.count_video_frames(FFMPEG, source),
                    )
                    cost = fx.estimated_cost(o["effects"], info.width, info.height, info.duration)
                    commands.append((cost, o["variationIndex"], cmd))
            commands.sort(key=lambda c: -c[0])
            replays.append(run_replay([c for *_, c in commands], slots))
            commands.sort(key=lambda c: (c[1], -c[0]))  # the claim order (refresher/store/queue.py, _next_variation)
            in_order.append(run_replay([c for *_, c in commands], slots))
            commands.sort(key=lambda c: -c[0])
            again.append(run_replay([c for *_, c in commands], slots))  # the machine's own noise
    ref, srv, rep, order = (statistics.median(v) for v in (refs, servers, replays, in_order))
    print(
        f"job of 2 sources × {args.variations} variations ({args.seconds:g} s 640×360 + 1280×720), "
        f"{slots} cores, {args.pollers} clients polling its status every 0.5 s, median of {args.rounds}"
    )
    print(f"  baseline  reference pipeline, one at a time : {ref:6.2f} s")
    print(f"  baseline  server's commands, perfect replay : {rep:6.2f} s")
    print(f"  baseline  the same, in the service's order  : {order:6.2f} s")
    print(f"  service   upload → completed                : {srv:6.2f} s")
    # Each round draws its own effects, so its replays are its own baseline:
    # the ratios are taken round by round, then their median.
    overall = [s / r for s, r in zip(servers, replays, strict=True)]
    ordering = [o / r for o, r in zip(in_order, replays, strict=True)]
    around = [s / o for s, o in zip(servers, in_order, strict=True)]
    speed_up = [r / s for r, s in zip(refs, servers, strict=True)]
    print(f"  speed-up over the reference                 : {statistics.median(speed_up):.2f}×  (target ≥ 1.5)")
    print(
        f"  overhead over the perfect replay            : {statistics.median(overall):.2f}×  (target ≤ 1.05)"
        f"   rounds: {_each(overall)}"
    )
    print(
        f"    of which the balanced order               : {statistics.median(ordering):.2f}×"
        f"   rounds: {_each(ordering)}"
    )
    print(f"    and the service around ffmpeg             : {statistics.median(around):.2f}×   rounds: {_each(around)}")
    noise = [a / r for a, r in zip(again, replays, strict=True)]
    print(f"  noise: the perfect replay run again         : {statistics.median(noise):.2f}×   rounds: {_each(noise)}")


def _each(ratios: list[float]) -> str:
    return " ".join(f"{r:.2f}" for r in ratios)


if __name__ == "__main__":
    main()
