"""Server memory while a large file is uploaded (streamed to disk, probed,
accepted), on a real gunicorn server.

The file (--mb, default 500) is a real MP4: a short lossless clip looped with
stream copy. The upload is streamed by the client too (requests-toolbelt), so
only the server's memory is measured: the peak RSS of its web workers above
their level before the upload. Beside it, the CPU time the web workers spent
on the upload (their own threads; the intake's ffmpeg calls, their children,
are not counted).

Baseline, same run: the same measurement for a 1 MB upload.

    python -m bench.upload_memory [--mb 500] [--rounds 1] [--before DIR]

--before DIR: a checkout of another commit (e.g. `git worktree add DIR
<commit>`), measured in the same run, alternated with this one, round by
round; each round starts a server of its own for each.
Target: < 64 MB added to the server's peak.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from requests_toolbelt import MultipartEncoder

from tests.support.media import run_ffmpeg
from bench._harness import ROOT, Server, make_clip, work_dir
from bench.zip_download import PeakRSS, worker_pids


def make_big_mp4(folder: Path, megabytes: int) -> Path:
    seed = folder / "seed.mp4"
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30:duration=4",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-qp",
        "0",
        str(seed),
    )
    loops = max(1, round(megabytes * 1024 * 1024 / seed.stat().st_size))
    big = folder / f"big-{megabytes}mb.mp4"
    run_ffmpeg("-stream_loop", str(loops - 1), "-i", str(seed), "-c", "copy", str(big))
    return big


class TimedEncoder(MultipartEncoder):
    """Notes when the last byte of the body was handed to the connection."""

    last_read = 0.0

    def read(self, size=-1):
        data = super().read(size)
        self.last_read = time.monotonic()
        return data


def upload(server: Server, path: Path) -> tuple[float, dict, float]:
    """(seconds for the whole request, the answer, seconds from the end of the body to the answer)."""
    encoder = TimedEncoder(fields={"videos": (path.name, open(path, "rb"), "video/mp4"), "variations": "1"})
    started = time.monotonic()
    r = server.session.post(server.url + "/api/jobs", data=encoder, headers={"Content-Type": encoder.content_type})
    ended = time.monotonic()
    assert r.status_code == 202, r.text
    return ended - started, r.json(), ended - encoder.last_read


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of the processes themselves (not their children)."""
    total = 0
    for pid in pids:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def web_worker_pids(master_pid: int) -> list[int]:
    """The gunicorn master's children but the supervisor."""
    return [
        pid for pid in worker_pids(master_pid) if b"refresher.engine" not in open(f"/proc/{pid}/cmdline", "rb").read()
    ]


def measure(root: Path, small: Path, big: Path, max_upload_mb: int) -> dict:
    """One server of the checkout at `root`: the small upload, then the big one."""
    with Server(root=root, MAX_UPLOAD_MB=max_upload_mb, ENCODE_WORKERS=1) as server:
        pids = worker_pids(server.proc.pid)
        web = web_worker_pids(server.proc.pid)
        meter = PeakRSS(pids)
        small_seconds, small_job, _ = upload(server, small)
        small_mb = meter.stop()
        server.session.post(f"{server.url}/api/jobs/{small_job['jobId']}/cancel")

        cpu_before = cpu_seconds(web)
        meter = PeakRSS(pids)
        big_seconds, big_job, big_after = upload(server, big)
        big_mb = meter.stop()
        big_cpu = cpu_seconds(web) - cpu_before
        server.session.post(f"{server.url}/api/jobs/{big_job['jobId']}/cancel")
    return {
        "small_seconds": small_seconds,
        "small_mb": small_mb,
        "big_seconds": big_seconds,
        "big_mb": big_mb,
        "big_after": big_after,
        "big_cpu": big_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--before", type=Path, help="a checkout of another commit, measured alternately")
    args = parser.parse_args()
    work = work_dir("refresher-bench-up-")
    small = make_clip(work, "small.mp4", "640x360", 4)
    big = make_big_mp4(work, args.mb)
    runs = [("before", args.before.resolve())] if args.before else []
    runs.append(("service", ROOT))
    results: dict[str, list[dict]] = {label: [] for label, _ in runs}
    for _ in range(args.rounds):
        for label, root in runs:
            results[label].append(measure(root, small, big, max(600, args.mb + 50)))

    size = big.stat().st_size / 1e6
    print(
        "upload of one MP4 through POST /api/jobs (streamed to disk, probed, accepted)"
        + (f", median of {args.rounds} rounds" if args.rounds > 1 else "")
        + (f"; before = {args.before}" if args.before else "")
    )
    for label, _ in runs:

        def median(name: str, rounds: list = results[label]) -> float:
            return statistics.median(r[name] for r in rounds)

        print(
            f"  baseline  {small.stat().st_size / 1e6:6.1f} MB file : {median('small_seconds'):6.2f} s   "
            f"server memory +{median('small_mb'):5.1f} MB" + (f"   ({label})" if args.before else "")
        )
        print(
            f"  {label:<8}  {size:6.1f} MB file : {median('big_seconds'):6.2f} s   "
            f"server memory +{median('big_mb'):5.1f} MB   web workers' CPU {median('big_cpu'):5.2f} s   "
            f"({size / median('big_seconds'):.0f} MB/s; answered {median('big_after'):.2f} s after the last byte)"
        )
        if args.rounds > 1:
            print(
                "            rounds: "
                + "  ".join(
                    f"{r['big_seconds']:.2f} s / {r['big_cpu']:.2f} s CPU / +{r['big_mb']:.1f} MB"
                    for r in results[label]
                )
            )


if __name__ == "__main__":
    main()
