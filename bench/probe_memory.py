"""Memory of the ffmpeg probes a burst of uploads starts, on a real gunicorn
server (two web workers, one encode worker).

The hostile file: an MJPEG MOV of one picture over 8K (default 16000×16000,
1.5 MB), sent --uploads times at once; each upload is refused with 415. The
worst legitimate file: a 1 s 7680×4320 H.264 clip, sent as often, accepted.
The figure is the peak, over samples every 5 ms, of the summed RSS of every
ffmpeg the server runs (probes and thumbnails), and how many ran at once.

Baseline, same run: the probe command as it was before the pixel limit and
the host's probe slots (every probe at once, the decoder free to allocate
any picture), run directly on the hostile file --uploads times at once.

    python -m bench.probe_memory [--size 16000x16000] [--uploads 8]
Target: a burst's probes stay under a stated figure (2 slots × 1 GB
address space each, at most), far below 8 × 407 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
from pathlib import Path

from tests.support.media import make_clip, run_ffmpeg
from bench._harness import FFMPEG, Server, work_dir
from bench.zip_download import rss_kb


def make_mjpeg_mov(folder: Path, size: str) -> Path:
    """One flat grey picture of `size` as a 1-frame MJPEG MOV."""
    path = folder / f"picture-{size}.mov"
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"color=c=gray:size={size}:rate=1",
        "-frames:v",
        "1",
        "-c:v",
        "mjpeg",
        "-q:v",
        "31",
        "-f",
        "mov",
        str(path),
    )
    return path


def make_8k_clip(folder: Path) -> Path:
    return make_clip(folder / "8k.mp4", "7680x4320", 1, audio=False)


def ffmpeg_children(parents: set[int]) -> list[int]:
    """Live ffmpeg processes whose parent is one of `parents`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                name, rest = f.read().rsplit(")", 1)
            fields = rest.split()
        except OSError:
            continue
        if int(fields[1]) in parents and "ffmpeg" in name and fields[0] != "Z":
            found.append(int(entry))
    return found


class ProbeMeter:
    """Peak summed RSS (MB) of the ffmpeg children of `parents`, and the most at once."""

    def __init__(self, parents: set[int]):
        self.parents = parents
        self.peak_mb = 0.0
        self.most = 0
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while self.running:
            pids = ffmpeg_children(self.parents)
            total = 0
            for pid in pids:
                try:
                    total += rss_kb(pid)
                except OSError:
                    pass
            self.peak_mb = max(self.peak_mb, total / 1024)
            self.most = max(self.most, len(pids))
            time.sleep(0.005)

    def stop(self) -> ProbeMeter:
        self.running = False
        self.thread.join()
        return self


def baseline(path: Path, count: int) -> ProbeMeter:
    """The probe as it was: no pixel limit, default threads, all at once."""
    meter = ProbeMeter({os.getpid()})
    procs = [
        subprocess.Popen(
            [
                FFMPEG,
                "-hide_banner",
                "-nostdin",
                "-nostats",
                "-protocol_whitelist",
                "file",
                "-f",
                "mov",
                "-enable_drefs",
                "0",
                "-use_absolute_path",
                "0",
                "-i",
                f"file:{path}",
                "-map",
                "0:v:0",
                "-frames:v",
                "1",
                "-f",
                "null",
                "-progress",
                "pipe:1",
                "-",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    for proc in procs:
        proc.wait()
    return meter.stop()


def burst(server: Server, path: Path, count: int) -> tuple[ProbeMeter, list[int], float]:
    workers = {
        int(p)
        for p in subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    }
    meter = ProbeMeter(workers)
    codes: list[int] = []

    def upload() -> None:
        with open(path, "rb") as f:
            r = server.session.post(
                server.url + "/api/jobs",
                files={"videos": (path.name, f, "video/mp4")},
                data={"variations": "1"},
                timeout=300,
            )
        codes.append(r.status_code)

    started = time.monotonic()
    senders = [threading.Thread(target=upload) for _ in range(count)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    return meter.stop(), sorted(codes), time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="16000x16000", help="the hostile picture, WxH (over 7680x4320)")
    parser.add_argument("--uploads", type=int, default=8)
    args = parser.parse_args()
    work = work_dir("refresher-bench-probe-")
    hostile = make_mjpeg_mov(work, args.size)
    legit = make_8k_clip(work)
    old = baseline(hostile, args.uploads)
    with Server(WEB_CONCURRENCY=2, ENCODE_WORKERS=1) as server:
        refused, refused_codes, refused_seconds = burst(server, hostile, args.uploads)
        accepted, accepted_codes, accepted_seconds = burst(server, legit, args.uploads)
    print(f"{args.uploads} uploads at once: peak summed RSS of their ffmpeg probes (most running at once)")
    print(
        f"  baseline  {args.size} MJPEG ({hostile.stat().st_size / 1e6:.1f} MB), old probe command   : "
        f"{old.peak_mb:7.1f} MB  ({old.most} at once)"
    )
    print(
        f"  service   {args.size} MJPEG, POST /api/jobs → {answers(refused_codes)}  : "
        f"{refused.peak_mb:7.1f} MB  ({refused.most} at once, {refused_seconds:.1f} s)"
    )
    print(
        f"  service   7680x4320 H.264 ({legit.stat().st_size / 1e6:.1f} MB), POST /api/jobs → "
        f"{answers(accepted_codes)} : {accepted.peak_mb:7.1f} MB  ({accepted.most} at once, "
        f"{accepted_seconds:.1f} s)"
    )


def answers(codes: list[int]) -> str:
    """'415×8', or every code when they differ."""
    return f"{codes[0]}×{len(codes)}" if len(set(codes)) == 1 else " ".join(map(str, codes))


if __name__ == "__main__":
    main()
