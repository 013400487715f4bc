"""Server memory while a large file is uploaded (streamed to disk, probed,
accepted), on a real gunicorn server.

The file (--mb, default 500) is a real MP4: a short lossless clip looped with
stream copy. The upload is streamed by the client too (requests-toolbelt), so
only the server's memory is measured: the peak RSS of its web workers above
their level before the upload.

Baseline, same run: the same measurement for a 1 MB upload.

    python -m bench.upload_memory [--mb 500]
Target: < 64 MB added to the server's peak.
"""
from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

from requests_toolbelt import MultipartEncoder

from bench._harness import FFMPEG, Server, make_clip, work_dir
from bench.zip_download import PeakRSS, worker_pids


def make_big_mp4(folder: Path, megabytes: int) -> Path:
    seed = folder / "seed.mp4"
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc2=size=1280x720:rate=30:duration=4", "-c:v", "libx264", "-preset", "ultrafast",
                    "-qp", "0", str(seed)], check=True)
    loops = max(1, round(megabytes * 1024 * 1024 / seed.stat().st_size))
    big = folder / f"big-{megabytes}mb.mp4"
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", str(loops - 1),
                    "-i", str(seed), "-c", "copy", str(big)], check=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=500)
    args = parser.parse_args()
    work = work_dir("refresher-bench-up-")
    small = make_clip(work, "small.mp4", "640x360", 4)
    big = make_big_mp4(work, args.mb)
    with Server(MAX_UPLOAD_MB=max(600, args.mb + 50), ENCODE_WORKERS=1) as server:
        pids = worker_pids(server.proc.pid)
        meter = PeakRSS(pids)
        small_seconds, small_job, _ = upload(server, small)
        small_mb = meter.stop()
        server.session.post(f"{server.url}/api/jobs/{small_job['jobId']}/cancel")

        meter = PeakRSS(pids)
        big_seconds, big_job, big_after = upload(server, big)
        big_mb = meter.stop()
        server.session.post(f"{server.url}/api/jobs/{big_job['jobId']}/cancel")
    size = big.stat().st_size / 1e6
    print("upload of one MP4 through POST /api/jobs (streamed to disk, probed, accepted)")
    print(f"  baseline  {small.stat().st_size / 1e6:6.1f} MB file : {small_seconds:6.2f} s   "
          f"server memory +{small_mb:5.1f} MB")
    print(f"  service   {size:6.1f} MB file : {big_seconds:6.2f} s   server memory +{big_mb:5.1f} MB   "
          f"({size / big_seconds:.0f} MB/s; answered {big_after:.2f} s after the last byte)")


if __name__ == "__main__":
    main()
