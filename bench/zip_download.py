"""ZIP download: throughput and the server's extra memory for a job of about
1 GB of outputs, on a real gunicorn server.

A real job is encoded first (2 sources × 5 variations); its outputs are then
grown to --mb-per-output MB each with random bytes (the ZIP does not care what
the bytes are), so the run takes seconds instead of minutes.

Baseline, in the same run: downloading one output of the same job through the
plain file route (`send_file`), per byte.

    python -m bench.zip_download [--mb-per-output 100]
Target: constant memory; < 64 MB added to the server's peak.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import threading
import time
import zipfile
from pathlib import Path

from bench._harness import Server, make_clip, work_dir


def worker_pids(master_pid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == master_pid:
                pids.append(int(entry))
    return pids


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class PeakRSS:
    """Samples the RSS of the given processes while a download runs."""

    def __init__(self, pids):
        self.pids = pids
        self.start = {p: rss_kb(p) for p in pids}
        self.peak = dict(self.start)
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        while self.running:
            for p in self.pids:
                try:
                    self.peak[p] = max(self.peak[p], rss_kb(p))
                except OSError:
                    pass
            time.sleep(0.01)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return max(self.peak[p] - self.start[p] for p in self.pids) / 1024


def download(server, url: str, target: Path) -> tuple[float, int]:
    started = time.monotonic()
    size = 0
    with server.session.get(server.url + url, stream=True) as r:
        r.raise_for_status()
        with open(target, "wb") as f:
            for chunk in r.iter_content(1 << 20):
                f.write(chunk)
                size += len(chunk)
        assert int(r.headers["Content-Length"]) == size
    return time.monotonic() - started, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb-per-output", type=int, default=100)
    args = parser.parse_args()
    work = work_dir("refresher-bench-zip-")
    sources = [make_clip(work, "a.mp4", "640x360", 4), make_clip(work, "b.mp4", "640x360", 4)]
    with Server(WEB_CONCURRENCY=2) as server:
        job = server.wait(server.submit(sources, variations=5))
        chunk = os.urandom(1 << 20)
        conn = sqlite3.connect(server.data_dir / "refresher.db")
        for f in job["files"]:
            for o in f["outputs"]:
                path = server.data_dir / "jobs" / job["jobId"] / f"{o['id']}.mp4"
                with open(path, "wb") as out:
                    for _ in range(args.mb_per_output):
                        out.write(chunk)
                conn.execute("UPDATE variations SET size = ? WHERE id = ?", (path.stat().st_size, o["id"]))
        conn.commit()
        conn.close()
        job = server.job(job["jobId"])
        first = job["files"][0]["outputs"][0]
        pids = worker_pids(server.proc.pid)

        meter = PeakRSS(pids)
        plain_seconds, plain_size = download(server, first["url"], work / "one.mp4")
        plain_mb = meter.stop()

        meter = PeakRSS(pids)
        zip_seconds, zip_size = download(server, job["downloadUrl"], work / "all.zip")
        zip_mb = meter.stop()
        with zipfile.ZipFile(work / "all.zip") as archive:
            assert archive.testzip() is None and len(archive.namelist()) == 11

    plain_rate = plain_size / plain_seconds / 1e6
    zip_rate = zip_size / zip_seconds / 1e6
    print(f"ZIP download of a job with {zip_size / 1e9:.2f} GB of outputs (10 outputs, STORE)")
    print(f"  baseline  one output via send_file : {plain_rate:8.0f} MB/s   server memory +{plain_mb:5.1f} MB")
    print(f"  service   GET …/download (ZIP)     : {zip_rate:8.0f} MB/s   server memory +{zip_mb:5.1f} MB")
    print(f"  throughput ratio zip/plain         : {zip_rate / plain_rate:.2f}×")


if __name__ == "__main__":
    main()
