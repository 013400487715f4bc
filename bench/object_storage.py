"""Object storage (STORAGE_URL=s3://…) against DATA_DIR, side by side in one run,
on real gunicorn servers; the S3 server is moto's, on loopback.

1. The 2 sources × 3 variations job (10 s 640×360 and 10 s 1280×720, with
   audio), from the start of the upload until `completed`: wall time with
   object storage / with DATA_DIR (the storage overhead).
2. ZIP download of a job whose 10 outputs are grown to --mb-per-output MB:
   throughput and the server's extra peak memory, from the bucket and from disk.
3. Upload of one --upload-mb MB MP4: the server's extra peak memory while it
   streams the file to its spool, probes it and stores it (a multipart upload
   to the bucket, or a rename on disk).

    python -m bench.object_storage [--rounds 2] [--mb-per-output 100] [--upload-mb 500]
Targets: ZIP and upload memory < 64 MB added, whatever the storage.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import time
import zipfile
from pathlib import Path

from bench._harness import MotoS3, Server, make_clip, work_dir
from bench.upload_memory import make_big_mp4, upload
from bench.zip_download import PeakRSS, download, worker_pids


def job_seconds(server: Server, sources: list[Path], variations: int) -> float:
    started = time.monotonic()
    job = server.wait(server.submit(sources, variations=variations))
    assert job["status"] == "completed", job
    return time.monotonic() - started


def grow_outputs(server: Server, job: dict, megabytes: int, s3: MotoS3 | None, work: Path) -> None:
    """Every output of the job becomes `megabytes` of random bytes, where it is stored."""
    filler = work / "filler.bin"
    if not filler.exists() or filler.stat().st_size != megabytes << 20:
        chunk = os.urandom(1 << 20)
        with open(filler, "wb") as out:
            for _ in range(megabytes):
                out.write(chunk)
    conn = sqlite3.connect(server.data_dir / "refresher.db")
    for output_id, output_path in conn.execute(
        "SELECT id, output_path FROM variations WHERE job_id = ?", (job["jobId"],)
    ).fetchall():
        if s3 is None:
            with open(server.data_dir / output_path, "wb") as out, open(filler, "rb") as src:
                while block := src.read(1 << 20):
                    out.write(block)
        else:
            s3.client().upload_file(str(filler), s3.bucket, f"media/{output_path}")
        conn.execute("UPDATE variations SET size = ? WHERE id = ?", (filler.stat().st_size, output_id))
    conn.commit()
    conn.close()


def zip_figures(server: Server, sources: list[Path], megabytes: int, s3: MotoS3 | None, work: Path):
    job = server.wait(server.submit(sources, variations=5))
    grow_outputs(server, job, megabytes, s3, work)
    job = server.job(job["jobId"])
    meter = PeakRSS(worker_pids(server.proc.pid))
    seconds, size = download(server, job["downloadUrl"], work / "all.zip")
    memory = meter.stop()
    with zipfile.ZipFile(work / "all.zip") as archive:
        assert archive.testzip() is None and len(archive.namelist()) == 11
    (work / "all.zip").unlink()
    one_seconds, one_size = download(server, job["files"][0]["outputs"][0]["url"], work / "one.mp4")
    (work / "one.mp4").unlink()
    return size / seconds / 1e6, memory, size, one_size / one_seconds / 1e6


def upload_memory(server: Server, path: Path) -> tuple[float, float, float]:
    meter = PeakRSS(worker_pids(server.proc.pid))
    seconds, job, after_body = upload(server, path)
    memory = meter.stop()
    server.session.post(f"{server.url}/api/jobs/{job['jobId']}/cancel")
    return seconds, memory, after_body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--variations", type=int, default=3)
    parser.add_argument("--mb-per-output", type=int, default=100)
    parser.add_argument("--upload-mb", type=int, default=500)
    args = parser.parse_args()
    work = work_dir("refresher-bench-s3-")
    sources = [make_clip(work, "a.mp4", "640x360", args.seconds), make_clip(work, "b.mp4", "1280x720", args.seconds)]
    zip_sources = [make_clip(work, "z1.mp4", "320x240", 2), make_clip(work, "z2.mp4", "320x240", 2)]
    big = make_big_mp4(work, args.upload_mb)
    times = {"disk": [], "s3": []}
    figures = {}
    with MotoS3() as s3:
        settings = {"MAX_UPLOAD_MB": max(600, args.upload_mb + 50), "WEB_CONCURRENCY": 2}
        with Server(**settings) as disk, Server(**settings, **s3.env) as bucket:
            for round_number in range(args.rounds):
                order = [("disk", disk), ("s3", bucket)]
                if round_number % 2:
                    order.reverse()  # neither always goes first on a warm cache
                for name, server in order:
                    times[name].append(job_seconds(server, sources, args.variations))
            for name, server, store in (("disk", disk, None), ("s3", bucket, s3)):
                figures[name] = (
                    zip_figures(server, zip_sources, args.mb_per_output, store, work),
                    upload_memory(server, big),
                )
    disk_time, s3_time = statistics.median(times["disk"]), statistics.median(times["s3"])
    print(f"object storage (moto's S3 server on loopback) vs DATA_DIR, {args.rounds} round(s)")
    print(f"  2×{args.variations} job   baseline DATA_DIR       : {disk_time:6.2f} s  (median of {times['disk']})")
    print(f"            service  object storage : {s3_time:6.2f} s  (median of {times['s3']})")
    print(f"            storage overhead        : {s3_time / disk_time:.2f}×")
    for label, index in (("baseline DATA_DIR      ", "disk"), ("service  object storage", "s3")):
        (rate, memory, size, one_rate), (up_seconds, up_memory, after_body) = figures[index]
        print(f"  ZIP of {size / 1e9:.2f} GB  {label} : {rate:7.0f} MB/s   server memory +{memory:5.1f} MB")
        print(
            f"  one output      {label} : {one_rate:7.0f} MB/s   "
            f"({'send_file' if index == 'disk' else 'a redirect to a presigned URL'})"
        )
        print(
            f"  upload {big.stat().st_size / 1e6:5.0f} MB {label} : {up_seconds:6.2f} s      "
            f"server memory +{up_memory:5.1f} MB   answered {after_body:5.2f} s after the last byte"
        )
    print(f"  ZIP throughput ratio object storage / DATA_DIR : {figures['s3'][0][0] / figures['disk'][0][0]:.2f}×")


if __name__ == "__main__":
    main()
