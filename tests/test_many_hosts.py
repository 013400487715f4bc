"""Many hosts, one queue: a web process with no supervisor and two worker
processes with their own host ids, one PostgreSQL, one DATA_DIR — all real
processes on this machine."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from refresher.store import Store

from .conftest import FFMPEG, PASSWORD, ROOT, GunicornServer, ffmpeg_pids_writing_under, processes_tagged, wait_until


class WorkerProcess:
    """`python -m refresher.worker`, as the Procfile's worker line runs it."""

    def __init__(self, data_dir: Path, log_dir: Path, **env):
        self.tag = uuid.uuid4().hex
        self.host_id = env["HOST_ID"]
        self.log_path = log_dir / f"worker-{self.host_id}.log"
        self.env = {**os.environ, "DATA_DIR": str(data_dir), "AUTH_PASSWORD": PASSWORD, "FFMPEG_BINARY": FFMPEG,
                    "REFRESHER_TEST_TAG": self.tag, **{k: str(v) for k, v in env.items()}}
        self.proc = None

    def start(self, store: Store) -> "WorkerProcess":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "refresher.worker"], cwd=ROOT, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: any(h["id"] == self.host_id for h in store.live_hosts(time.time(), 5))
                   or self.proc.poll() is not None, timeout=30)
        assert self.proc.poll() is None, self.log_text()
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for pid in processes_tagged(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


@pytest.fixture
def cluster(postgres, tmp_path):
    """start(workers=2, **env) → (web server, [worker processes], store)."""
    made = []

    def start(workers: int = 2, **env):
        url = postgres.new_database()
        data_dir = tmp_path / "shared"
        data_dir.mkdir()
        store = Store(url)
        store.migrate()
        common = {"DATABASE_URL": url, "HOST_TIMEOUT_SECONDS": 3, **env}
        hosts = [WorkerProcess(data_dir, tmp_path, HOST_ID=f"worker.{i + 1}", ENCODE_WORKERS=1, **common)
                 for i in range(workers)]
        for host in hosts:
            made.append(host)
            host.start(store)
        web = GunicornServer(data_dir, ENCODE_WORKERS=0, **common)
        made.append(web)
        web.start()
        return web, hosts, store

    yield start
    for process in made:
        process.stop()
        if isinstance(process, GunicornServer):
            process.kill_leftovers()


def submit(web, path: Path, variations: int) -> str:
    with open(path, "rb") as f:
        r = web.session.post(f"{web.url}/api/jobs", files=[("videos", (path.name, f, "video/mp4"))],
                             data={"variations": str(variations)})
    assert r.status_code == 202, r.text
    return r.json()["jobId"]


def job_of(web, job_id: str) -> dict:
    return web.session.get(f"{web.url}/api/jobs/{job_id}").json()


def outputs(job: dict) -> list[dict]:
    return [o for f in job["files"] for o in f["outputs"]]


def test_a_job_spreads_over_every_host(cluster, media):
    web, hosts, store = cluster()
    assert web.session.get(f"{web.url}/api/health").json()["supervisor"] == "elsewhere"
    job_id = submit(web, media["clip"], 8)
    job = wait_until(lambda: (j := job_of(web, job_id))["status"] in ("completed", "failed") and j, timeout=120)
    assert job["status"] == "completed" and job["completedVariations"] == 8, job
    made = outputs(job)
    assert len({o["id"] for o in made}) == 8
    assert {o["host"] for o in made} == {"worker.1", "worker.2"}, "each host made some"


def test_a_cancel_through_the_web_stops_ffmpeg_on_every_host(cluster, media):
    web, hosts, store = cluster()
    job_id = submit(web, media["slow"], 4)
    folder = web.data_dir / "jobs" / job_id
    wait_until(lambda: len(ffmpeg_pids_writing_under(folder)) == 2, timeout=60)
    started = time.monotonic()
    r = web.session.post(f"{web.url}/api/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert time.monotonic() - started < 2.0, "q stopped both, before any SIGTERM"
    assert ffmpeg_pids_writing_under(folder) == []
    assert not [p for p in folder.iterdir() if ".part" in p.name]


def test_a_killed_host_loses_nothing_and_the_other_finishes_the_job(cluster, media):
    web, (first, second), store = cluster()
    job_id = submit(web, media["long"], 6)
    wait_until(lambda: any(v["status"] == "processing" and v["host"] == "worker.1"
                           for v in store.get_job_variations(job_id)), timeout=60)
    first.stop(signal.SIGKILL)  # its ffmpeg dies with it; its claim stays until its heartbeat is missed
    job = wait_until(lambda: (j := job_of(web, job_id))["status"] in ("completed", "failed") and j, timeout=180)
    assert job["status"] == "completed" and len({o["id"] for o in outputs(job)}) == 6, job
    assert "fell silent" in second.log_text()


def test_sigterm_hands_a_host_s_running_variations_back_at_once(cluster, media):
    web, (first, second), store = cluster()
    job_id = submit(web, media["slow"], 2)
    wait_until(lambda: sum(v["status"] == "processing" for v in store.get_job_variations(job_id)) == 2,
               timeout=60)
    first.stop(signal.SIGTERM)
    requeued = [v for v in store.get_job_variations(job_id) if v["host"] is None]
    assert requeued and all(v["status"] in ("queued", "processing") for v in requeued)
    assert all(h["id"] != "worker.1" for h in store.live_hosts(time.time(), 30)), "it said goodbye"
