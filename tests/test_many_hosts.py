"""Many hosts, one queue: a web process with no supervisor and two worker
processes with their own host ids, one PostgreSQL, one DATA_DIR — all real
processes on this machine."""

from __future__ import annotations

import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from refresher.engine.control import ControlBlock
from refresher.store import LISTENER_NAME, Store

from .conftest import ROOT, WorkerProcess, ffmpeg_pids_writing_under, job_of, submit_to
from .support.servers import wait_until
from .support.processes import encode_workers, mapped_packages


def outputs(job: dict) -> list[dict]:
    return [o for f in job["files"] for o in f["outputs"]]


def test_a_job_spreads_over_every_host(cluster, media):
    web, hosts, store = cluster()
    assert web.session.get(f"{web.url}/api/health").json()["supervisor"] == "elsewhere"
    job_id = submit_to(web, media["clip"], 8)
    job = wait_until(lambda: (j := job_of(web, job_id))["status"] in ("completed", "failed") and j, timeout=120)
    assert job["status"] == "completed" and job["completedVariations"] == 8, job
    made = outputs(job)
    assert len({o["id"] for o in made}) == 8
    assert {o["host"] for o in made} == {"worker.1", "worker.2"}, "each host made some"
    # the worker process type's encode workers do not load its database libraries either
    for host in hosts:
        workers = encode_workers(host.proc.pid)
        assert workers and all("sqlalchemy" not in mapped_packages(pid) for pid in workers), [
            mapped_packages(pid) for pid in workers
        ]


def test_a_cancel_through_the_web_stops_ffmpeg_on_every_host(cluster, media):
    web, hosts, store = cluster()
    job_id = submit_to(web, media["slow"], 4)
    folder = web.data_dir / "jobs" / job_id
    wait_until(lambda: len(ffmpeg_pids_writing_under(folder)) == 2, timeout=60)
    r = web.session.post(f"{web.url}/api/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert ffmpeg_pids_writing_under(folder) == []

    def stops() -> list[str]:  # what ended each ffmpeg, as its host logged it
        return re.findall(r"\(ffmpeg stopped by (\S+)\)", "".join(host.log_text() for host in hosts))

    wait_until(lambda: len(stops()) >= 2, timeout=30)
    assert stops() == ["q", "q"], "q stopped both, before any SIGTERM"
    assert not [p for p in folder.iterdir() if ".part" in p.name]


def cancel_and_time(web, store: Store, job_id: str, folder: Path) -> tuple[float, float]:
    """POST …/cancel with an encode running on each host: seconds until
    every worker host's cancel flag is set, and until the answer, which must
    be "cancelled" with no ffmpeg of the job left."""
    wait_until(lambda: len(ffmpeg_pids_writing_under(folder)) == 2, timeout=60)
    seq = store.get_job(job_id)["seq"]
    blocks = [ControlBlock(path) for path in (web.data_dir / "run").glob("control-*")]
    assert len(blocks) == 2, "one control block per worker host"
    flagged = []

    def watch():
        while time.monotonic() - started < 30:
            if all(block.is_cancelled(seq) for block in blocks):
                flagged.append(time.monotonic() - started)
                return
            time.sleep(0.001)

    started = time.monotonic()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    r = web.session.post(f"{web.url}/api/jobs/{job_id}/cancel")
    elapsed = time.monotonic() - started
    watcher.join()
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert ffmpeg_pids_writing_under(folder) == []
    assert flagged, "the flags were never set"
    return flagged[0], elapsed


def test_a_cancel_reaches_the_other_hosts_by_notification_not_by_the_poll(cluster, media):
    """With the database poll a minute apart, only PostgreSQL's NOTIFY can
    tell the worker hosts of a cancel the web process accepted (else the
    answer, after 15 s of waiting, is still "processing")."""
    web, hosts, store = cluster(CANCEL_DB_POLL_SECONDS=60)
    for _ in range(2):
        job_id = submit_to(web, media["slow"], 4)
        flagged, elapsed = cancel_and_time(web, store, job_id, web.data_dir / "jobs" / job_id)
        assert flagged < 1.0, f"both hosts' flags set {flagged:.2f} s after the request"
        assert elapsed < 10.0, f"{elapsed:.2f} s"


def test_a_cancel_sent_while_a_host_s_listening_connection_is_lost_still_arrives(cluster, media):
    """The listening connections are cut and the cancel is sent before they
    are made again: its NOTIFY reaches nobody, and the poll each host makes
    once it listens again finds it (the regular poll is a minute apart)."""
    web, hosts, store = cluster(CANCEL_DB_POLL_SECONDS=60)
    job_id = submit_to(web, media["slow"], 4)
    folder = web.data_dir / "jobs" / job_id
    wait_until(lambda: len(ffmpeg_pids_writing_under(folder)) == 2, timeout=60)
    with store.writing() as conn:
        cut = conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %(name)s",
            {"name": LISTENER_NAME},
        ).all()
    assert len(cut) == 2, "one listening connection per worker host"
    flagged, elapsed = cancel_and_time(web, store, job_id, folder)
    assert flagged < 5.0, f"both hosts' flags set {flagged:.2f} s after the request"
    for host in hosts:
        wait_until(lambda host=host: "listening for cancels again" in host.log_text(), timeout=10)


def test_a_killed_host_loses_nothing_and_the_other_finishes_the_job(cluster, media):
    web, (first, second), store = cluster()
    job_id = submit_to(web, media["long"], 3)
    wait_until(
        lambda: any(v["status"] == "processing" and v["host"] == "worker.1" for v in store.get_job_variations(job_id)),
        timeout=60,
    )
    first.stop(signal.SIGKILL)  # its ffmpeg dies with it; its claim stays until its heartbeat is missed
    job = wait_until(lambda: (j := job_of(web, job_id))["status"] in ("completed", "failed") and j, timeout=180)
    assert job["status"] == "completed" and len({o["id"] for o in outputs(job)}) == 3, job
    assert "fell silent" in second.log_text()


def test_sigterm_hands_a_host_s_running_variations_back_at_once(cluster, media):
    web, (first, second), store = cluster()
    job_id = submit_to(web, media["slow"], 2)
    wait_until(lambda: sum(v["status"] == "processing" for v in store.get_job_variations(job_id)) == 2, timeout=60)
    first.stop(signal.SIGTERM)
    requeued = [v for v in store.get_job_variations(job_id) if v["host"] is None]
    assert requeued and all(v["status"] in ("queued", "processing") for v in requeued)
    assert all(h["id"] != "worker.1" for h in store.live_hosts(time.time(), 30)), "it said goodbye"


# --- one process per HOST_ID ----------------------------------------------------------------


def twin_of(worker: WorkerProcess, log_dir: Path) -> WorkerProcess:
    """Another worker process with the same settings, HOST_ID included."""
    log_dir.mkdir()
    env = {k: v for k, v in worker.env.items() if k != "REFRESHER_TEST_TAG"}
    return WorkerProcess(Path(env.pop("DATA_DIR")), log_dir, **env)


def refused(worker: WorkerProcess, timeout: float = 60) -> str:
    """Start a worker that must refuse: its exit status is 2; its output."""
    worker.log = open(worker.log_path, "ab")
    worker.proc = subprocess.Popen(
        [sys.executable, "-m", "refresher.worker"],
        cwd=ROOT,
        env=worker.env,
        stdout=worker.log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert worker.proc.wait(timeout) == 2, worker.log_text()
    finally:
        worker.stop()
    return worker.log_text()


def test_a_second_worker_with_a_live_host_s_id_refuses_to_start(cluster, tmp_path):
    web, (first,), store = cluster(workers=1)
    before = {h["id"]: h for h in store.live_hosts(time.time(), 30)}["worker.1"]
    twin = twin_of(first, tmp_path / "twin")
    output = refused(twin)
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith(
        "Video Refresher cannot start: HOST_ID worker.1 is in use by a live process "
        f"(pid {first.proc.pid} on this machine"
    ), output
    after = {h["id"]: h for h in store.live_hosts(time.time(), 30)}["worker.1"]
    assert (after["instance"], after["pid"]) == (before["instance"], before["pid"]), "the live host keeps its id"
    assert first.proc.poll() is None


def test_a_live_host_on_another_machine_is_told_by_its_heartbeat(cluster, tmp_path):
    web, (first,), store = cluster(workers=1, HOST_TIMEOUT_SECONDS=30)
    with store.writing() as conn:  # as if worker.1 ran elsewhere: its pid means nothing here
        conn.exec_driver_sql("UPDATE hosts SET machine = 'another machine' WHERE id = 'worker.1'")
    twin = twin_of(first, tmp_path / "twin")
    started = time.monotonic()
    output = refused(twin)
    assert time.monotonic() - started < 20, "the heartbeat moved within a second or two: no need to wait 30 s"
    assert (
        "Video Refresher cannot start: HOST_ID worker.1 is in use by a live process "
        f"(pid {first.proc.pid} on another machine" in output.splitlines()[-1]
    ), output
    assert first.proc.poll() is None


def test_a_host_restarted_after_kill_9_takes_its_id_back_at_once(cluster, media, tmp_path):
    web, (first, second), store = cluster(workers=2, HOST_TIMEOUT_SECONDS=60)
    job_id = submit_to(web, media["slow"], 2)
    wait_until(
        lambda: any(v["status"] == "processing" and v["host"] == "worker.1" for v in store.get_job_variations(job_id)),
        timeout=60,
    )
    first.stop(signal.SIGKILL)
    again = twin_of(first, tmp_path / "again")
    started = time.monotonic()
    try:
        again.start(store)
        # the killed run's heartbeat is still fresh, but its pid is gone: no 60 s wait
        wait_until(
            lambda: any(
                h["id"] == "worker.1" and h["pid"] == again.proc.pid for h in store.live_hosts(time.time(), 60)
            ),
            timeout=30,
        )
        assert time.monotonic() - started < 30, again.log_text()
        assert f"its previous supervisor (pid {first.proc.pid}) is gone" in again.log_text()
        # what the killed run had claimed went back to the queue and runs again
        wait_until(
            lambda: (
                all(v["status"] == "processing" and v["attempts"] >= 1 for v in store.get_job_variations(job_id))
                and any(v["attempts"] == 2 for v in store.get_job_variations(job_id))
            ),
            timeout=60,
        )
        web.session.post(f"{web.url}/api/jobs/{job_id}/cancel")
    finally:
        again.stop()


# --- the cleanup daemon, once per cluster ----------------------------------------------------

_PASS = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO refresher.lifecycle: cleanup pass in process "
    r"(\d+)( done)?",
    re.M,
)


def cleanup_passes(log: str) -> list[tuple[datetime, datetime]]:
    """(start, end) of every finished cleanup pass in a host's log."""
    passes, started = [], None
    for stamp, _pid, done in _PASS.findall(log):
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
        if done and started is not None:
            passes.append((started, at))
            started = None
        elif not done:
            started = at
    return passes


def test_the_cleanup_daemon_never_runs_on_two_hosts_at_once(cluster, tmp_path):
    """Two worker hosts, a pass every 0.1 s, each pass made slow by a
    folder of 20,000 files under jobs/ that it walks to count the storage's
    usage and to sweep (files of no job, younger than any pass removes):
    without the advisory lock, their passes would overlap many times."""
    web, (first, second), store = cluster(workers=2, CLEANUP_INTERVAL_SECONDS=0.1)
    crowd = web.data_dir / "jobs" / "crowd"
    crowd.mkdir(parents=True)
    for i in range(20_000):
        (crowd / str(i)).touch()
    crowded = datetime.now()  # the log's clock: local time

    def slow_passes(host: WorkerProcess) -> list[tuple[datetime, datetime]]:
        return [p for p in cleanup_passes(host.log_text()) if p[0] > crowded]

    wait_until(
        lambda: (
            all(len(slow_passes(h)) >= 5 for h in (first, second))
            or sum(len(slow_passes(h)) for h in (first, second)) >= 40
        ),
        timeout=120,
    )
    one, two = slow_passes(first), slow_passes(second)
    assert statistics.median((end - start).total_seconds() for start, end in one + two) >= 0.02, "the passes are slow"
    overlaps = [(a, b) for a in one for b in two if a[0] < b[1] and b[0] < a[1]]
    assert overlaps == [], overlaps[:3]
    assert "cleanup pass skipped: another host runs one" in first.log_text() + second.log_text()
