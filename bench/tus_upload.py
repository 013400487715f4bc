"""A large upload as a resumable upload (tus, /api/uploads) against the same
file in one multipart request (POST /api/jobs), on a real gunicorn server,
with the files on DATA_DIR and in object storage (moto's S3 server).

For each: the wall time from the first byte to the job's 202, the peak RSS
the server's processes added while it ran, and the time from the last byte
handed to the connection to the 202 (for tus: the last PATCH, whose answer
waits for the check of the video, then the JSON request that makes the job).
The tus upload is sent by the service's own client (`refresher submit`'s
uploader: a first PATCH of 10 MB, then PATCHes sized to the link, up to
100 MB), and once more as one PATCH of the whole file (what tus-js-client
sends unless told a chunk size); the multipart one is streamed by
requests-toolbelt, as `bench/upload_memory.py` does. No host encodes
(ENCODE_WORKERS=0): a job made by one way would otherwise fetch its source
and encode while the next way is measured. Each round takes the ways in
another order.

    python -m bench.tus_upload [--mb 500] [--rounds 1] [--storage disk,s3]

Targets (issue 27): tus within 1.10x the multipart wall time; server memory
flat (+20 MB at most); from the last byte to the 202 no slower than multipart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench._harness import MotoS3, Server, work_dir
from bench.upload_memory import make_big_mp4, upload, worker_pids
from bench.zip_download import PeakRSS
from refresher.client.api import Server as Client
from refresher.client.resumable import Ledger


class LastByte:
    """The uploader's progress: notes when the file's last byte was read to be sent."""

    def __init__(self, size: int):
        self.size = size
        self.at = 0.0

    def reached(self, done: int) -> None:
        if done >= self.size and not self.at:
            self.at = time.monotonic()


def upload_tus(server: Server, path: Path) -> tuple[float, dict, float]:
    """(seconds from the first byte to the 202, the answer, seconds from the last byte to the 202)."""
    token = server.session.headers["Authorization"].removeprefix("Bearer ")
    client = Client(server.url, token)
    with tempfile.TemporaryDirectory() as ledger:
        uploader = client.uploader(Ledger(Path(ledger) / "uploads.json"))
        progress = LastByte(path.stat().st_size)
        started = time.monotonic()
        upload_id, _ = uploader.send(path, progress)
        created = client.create_job_from_uploads([upload_id], 1, None)
        ended = time.monotonic()
    return ended - started, created, ended - progress.at


def upload_tus_whole(server: Server, path: Path) -> tuple[float, dict, float]:
    """The same in one PATCH of the whole file (as tus-js-client sends by default), streamed from disk."""
    size = path.stat().st_size
    tus = {"Tus-Resumable": "1.0.0"}
    started = time.monotonic()
    r = server.session.post(f"{server.url}/api/uploads", headers={**tus, "Upload-Length": str(size)})
    location = r.headers["Location"]
    with open(path, "rb") as f:
        reader = TimedFile(f)
        r = server.session.patch(
            server.url + location,
            data=reader,
            headers={**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        )
    assert r.status_code == 204, r.text
    r = server.session.post(f"{server.url}/api/jobs", json={"uploads": [location.rsplit("/", 1)[1]], "variations": 1})
    ended = time.monotonic()
    assert r.status_code == 202, r.text
    return ended - started, r.json(), ended - reader.last_read


class TimedFile:
    """A file read as it is sent; notes when its last bytes were read."""

    def __init__(self, f):
        self.f = f
        self.last_read = 0.0
        self.len = os.fstat(f.fileno()).st_size

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.last_read = time.monotonic()
        return data


def measure(storage: str, big: Path, rounds: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {way: [] for way in WAYS}
    env = {"MAX_UPLOAD_MB": max(600, int(big.stat().st_size / 1e6) + 50), "ENCODE_WORKERS": 0}
    moto = MotoS3() if storage == "s3" else None
    if moto is not None:
        moto.__enter__()
        env.update(moto.env)
    try:
        with Server(**env) as server:
            ways = list(WAYS.items())
            for round_ in range(rounds):
                for way, send in ways[round_ % len(ways) :] + ways[: round_ % len(ways)]:
                    meter = PeakRSS(worker_pids(server.proc.pid))
                    seconds, job, after = send(server, big)
                    added = meter.stop()
                    server.session.delete(f"{server.url}/api/jobs/{job['jobId']}")
                    results[way].append({"seconds": seconds, "mb": added, "after": after})
    finally:
        if moto is not None:
            moto.__exit__(None, None, None)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--storage", default="disk,s3", help="disk, s3 or both (comma-separated)")
    args = parser.parse_args()
    big = make_big_mp4(work_dir("refresher-bench-tus-"), args.mb)
    size = big.stat().st_size / 1e6
    print(
        f"one {size:.0f} MB MP4 as a resumable upload (tus) and as one multipart request"
        + (f", median of {args.rounds} rounds" if args.rounds > 1 else "")
    )
    for storage in args.storage.split(","):
        results = measure(storage, big, args.rounds)

        def median(way: str, name: str, results: dict = results) -> float:
            return statistics.median(r[name] for r in results[way])

        for way in WAYS:
            label = way + (" (baseline)" if way == "multipart" else " (service)")
            seconds = median(way, "seconds")
            print(
                f"  {storage:<4} {label:<22}: {seconds:6.2f} s ({size / seconds:4.0f} MB/s)"
                f"   server memory +{median(way, 'mb'):5.1f} MB   202 {median(way, 'after'):5.2f} s after the last byte"
            )
        print(
            f"  {storage:<4} tus / multipart wall time: "
            f"{median('tus', 'seconds') / median('multipart', 'seconds'):.2f}x"
        )


WAYS = {"multipart": upload, "tus": upload_tus, "tus 1 PATCH": upload_tus_whole}

if __name__ == "__main__":
    main()
