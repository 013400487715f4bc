"""Cancel latency: POST /api/jobs/<id>/cancel → response, with the job's ffmpeg
processes really gone, on a real gunicorn server with two encodes running.

Baselines, measured in the same run: ffmpeg's own reaction to `q` (the same
encode command started directly, `q` written, process reaped); and two such
encodes, at the encodes' scheduling priority, stopped at the same moment, as
a cancel stops the job's two (the time until both are gone).

    python -m bench.cancel_latency [--runs 15]
Target: median under 0.3 s, max under 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench._harness import FFMPEG, Server, make_clip, summary, work_dir

from refresher.media import effects as fx
from refresher.media import ffmpeg


def ffmpeg_running_under(folder: Path) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
                state = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if str(folder).encode() in cmdline and state != "Z":
                pids.append(int(entry))
    return pids


def baseline(source: Path, runs: int, together: int = 1) -> list[float]:
    """ffmpeg alone: from writing `q` to the process being reaped. With
    `together`, that many encodes run side by side, at the scheduling
    priority the service gives them, and are stopped at the same moment, as a
    cancel stops a job's encodes: the time until the last one is gone."""
    info = ffmpeg.probe(FFMPEG, source)
    frames = ffmpeg.count_video_frames(FFMPEG, source)
    times = []
    with tempfile.TemporaryDirectory() as out:
        for i in range(runs):
            procs = []
            for k in range(together):
                cmd = fx.encode_command(
                    FFMPEG,
                    source,
                    Path(out) / f"b{k}.mp4",
                    fx.draw_effects("b", k, i),
                    info.width,
                    info.height,
                    info.has_audio,
                    info.audio_codec,
                    duration=info.duration,
                    video_frames=frames,
                )
                if together > 1:
                    cmd = ffmpeg.launch_command(cmd, idle=True)
                procs.append(
                    subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
            time.sleep(0.8 + 0.037 * i)  # land at different points of ffmpeg's cycle
            started = time.monotonic()
            for proc in procs:
                proc.stdin.write(b"q")
                proc.stdin.flush()
            for proc in procs:
                proc.wait()
            times.append(time.monotonic() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=60, help="length of the source clip")
    args = parser.parse_args()
    media = work_dir("refresher-bench-media-")
    source = make_clip(media, "cancel-source.mp4", "1280x720", args.seconds, cancelled=True)

    base = baseline(source, args.runs)
    both = baseline(source, args.runs, together=2)
    service = []
    with Server(ENCODE_WORKERS=2) as server:
        for i in range(args.runs):
            job_id = server.submit([source], variations=4)
            folder = server.data_dir / "jobs" / job_id
            deadline = time.monotonic() + 30
            while len(ffmpeg_running_under(folder)) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3 + 0.037 * i)
            started = time.monotonic()
            r = server.session.post(f"{server.url}/api/jobs/{job_id}/cancel")
            elapsed = time.monotonic() - started
            assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
            leftover = ffmpeg_running_under(folder)
            assert not leftover, f"ffmpeg still running after the response: {leftover}"
            service.append(elapsed)

    print("cancel latency (request → response, ffmpeg gone), 2 encodes running")
    print(f"  baseline  ffmpeg alone, q → exit : {summary(base)}")
    print(f"  baseline  two at once, as a job's: {summary(both)}")
    print(f"  service   POST …/cancel          : {summary(service)}")
    median = statistics.median
    print(
        f"  median ratio service/baseline    : {median(service) / median(base):.2f}×; "
        f"against two at once: {median(service) / median(both):.2f}×"
    )


if __name__ == "__main__":
    main()
