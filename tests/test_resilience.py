"""Shutdowns, crashes and dying parts: no work lost, nothing orphaned."""

from __future__ import annotations

import hashlib
import multiprocessing
import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from refresher.engine.control import ControlBlock
from refresher.engine import supervisor as supervisor_module
from refresher.engine.handle import SupervisorHandle
from refresher.engine.supervisor import Supervisor, _Outcome, _Worker
from refresher.store import OperationalError, Store
from refresher.webapp import create_app

from .conftest import EmbeddedService, FFMPEG, PASSWORD, ROOT, ffmpeg_pids_writing_under, make_settings
from .support.servers import wait_until
from .support.processes import encode_workers, mapped_packages


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_encode_workers_load_none_of_the_supervisor_s_libraries(make_service, media):
    """An encode worker is spawned: multiprocessing imports the parent's main
    module again in it unless that is a package's __main__. The supervisor
    runs as `python -m refresher.engine`, so its workers start in a fraction
    of the time and memory, without SQLAlchemy (whose compiled modules would
    show in their memory maps, as they do in the supervisor's); and the tasks
    they are sent carry plain values only, which load nothing either."""
    svc = make_service(encode_workers=2)
    workers = wait_until(lambda: (found := encode_workers(svc.supervisor.pid)) and len(found) == 2 and found)
    assert svc.wait(svc.submit([media["clip"]], variations=2)["jobId"])["status"] == "completed"
    assert "sqlalchemy" in mapped_packages(svc.supervisor.pid)
    assert encode_workers(svc.supervisor.pid) == workers
    for pid in workers:
        assert "sqlalchemy" not in mapped_packages(pid), mapped_packages(pid)


def job_of(server, job_id):
    return server.session.get(f"{server.url}/api/jobs/{job_id}").json()


def submit(server, paths, variations):
    files = [("videos", (Path(p).name, open(p, "rb"), "video/mp4")) for p in paths]
    r = server.session.post(f"{server.url}/api/jobs", files=files, data={"variations": str(variations)})
    assert r.status_code == 202, r.text
    return r.json()["jobId"]


def finished_outputs(data_dir: Path, job_id: str) -> dict[str, str]:
    """variation id → sha256 of its output, for every completed variation."""
    store = Store(data_dir / "refresher.db")
    try:
        return {
            v["id"]: hashlib.sha256((data_dir / v["output_path"]).read_bytes()).hexdigest()
            for v in store.get_job_variations(job_id)
            if v["status"] == "completed"
        }
    finally:
        store.close()


def running_ffmpeg(data_dir: Path, job_id: str) -> list[int]:
    return ffmpeg_pids_writing_under(data_dir / "jobs" / job_id)


def mid_job(server, media, variations=3):
    """A job with at least one finished variation and one encoding."""
    job_id = submit(server, [media["long"]], variations)
    wait_until(
        lambda: job_of(server, job_id)["completedVariations"] >= 1 and running_ffmpeg(server.data_dir, job_id),
        interval=0.02,
    )
    return job_id


def test_sigterm_mid_job_then_restart_resumes(gunicorn_server, media):
    server = gunicorn_server(ENCODE_WORKERS=1)
    job_id = mid_job(server, media)
    before = finished_outputs(server.data_dir, job_id)
    elapsed = server.stop(signal.SIGTERM)
    assert elapsed < 30, f"shutdown took {elapsed:.1f} s"
    assert server.leftovers() == [], "every process is gone"
    folder = server.data_dir / "jobs" / job_id
    assert not [p for p in folder.iterdir() if ".part" in p.name], "no partial output survives"

    again = gunicorn_server(ENCODE_WORKERS=1, DATA_DIR=server.data_dir)
    job = wait_until(lambda: (j := job_of(again, job_id))["status"] == "completed" and j)
    after = finished_outputs(again.data_dir, job_id)
    assert len(after) == 3 and job["completedVariations"] == 3
    assert {k: after[k] for k in before} == before, "finished variations kept: same ids, same bytes"


def test_sigkill_of_the_whole_server_then_restart_resumes(gunicorn_server, media):
    server = gunicorn_server(ENCODE_WORKERS=2)
    job_id = mid_job(server, media, variations=4)
    before = finished_outputs(server.data_dir, job_id)
    os.killpg(server.proc.pid, signal.SIGKILL)  # master, workers, supervisor, pool; ffmpeg has its own session
    server.proc.wait()
    wait_until(lambda: not running_ffmpeg(server.data_dir, job_id), timeout=5)
    assert server.leftovers() == []

    again = gunicorn_server(ENCODE_WORKERS=2, DATA_DIR=server.data_dir)
    wait_until(lambda: job_of(again, job_id)["status"] == "completed")
    after = finished_outputs(again.data_dir, job_id)
    assert len(after) == 4 and {k: after[k] for k in before} == before
    folder = again.data_dir / "jobs" / job_id
    assert not [p for p in folder.iterdir() if ".part" in p.name]


def test_sigkill_of_the_master_alone_stops_the_supervisor_cleanly(gunicorn_server, media):
    """The master killed with -9 runs no shutdown of its own: its supervisor
    gets SIGTERM from the kernel (it asked for it when it started) and stops
    as on any SIGTERM: ffmpeg stopped, the partial file removed, the
    variation back in the queue as interrupted, not failed."""
    server = gunicorn_server(ENCODE_WORKERS=1)
    job_id = submit(server, [media["slow"]], 1)
    wait_until(lambda: running_ffmpeg(server.data_dir, job_id), interval=0.02)
    supervisor = int(re.findall(r"supervisor (\d+) running", server.log_text())[-1])
    server.proc.kill()
    server.proc.wait()
    wait_until(lambda: f"supervisor {supervisor} stopped on SIGTERM" in server.log_text(), timeout=20)
    assert server.leftovers() == [], "the supervisor, its encode workers, ffmpeg and the web workers are gone"
    assert not list((server.data_dir / "jobs" / job_id).rglob("*.part*")), "no partial file left"
    store = Store(server.data_dir / "refresher.db")
    try:
        [variation] = store.get_job_variations(job_id)
    finally:
        store.close()
    assert (variation["status"], variation["attempts"], variation["failures"]) == ("queued", 1, 0), variation


def test_a_supervisor_whose_server_is_already_gone_does_not_start(tmp_path):
    """The supervisor asks for its SIGTERM itself, once it runs; a server
    that died before that would never send it. So it checks that its parent
    is still the server that started it (--parent), and starts nothing when
    it is not."""
    settings = make_settings(tmp_path / "data", encode_workers=1)
    control = ControlBlock.create(settings.data_dir / "run")
    not_its_parent = os.getppid()  # alive, but not the parent of the process started below
    done = subprocess.run(
        [sys.executable, "-m", "refresher.engine", "--control", str(control.path), "--parent", str(not_its_parent)],
        input=settings.to_json(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and f"(pid {not_its_parent}) is gone" in lines[0], lines
    assert control.supervisor_pid() == 0, "it never reported as running"
    assert not (settings.data_dir / supervisor_module.SUPERVISOR_LOCK).exists(), "it took nothing"


def test_supervisor_killed_is_replaced_and_the_job_completes(gunicorn_server, media):
    server = gunicorn_server(ENCODE_WORKERS=1)
    job_id = mid_job(server, media)
    old = int(re.findall(r"supervisor (\d+) running", server.log_text())[-1])
    old_ffmpeg = running_ffmpeg(server.data_dir, job_id)
    killed_at = time.monotonic()
    os.kill(old, signal.SIGKILL)
    health = []
    new = wait_until(
        lambda: (
            health.append(server.session.get(server.url + "/api/health").status_code)
            or [p for p in re.findall(r"supervisor (\d+) running", server.log_text()) if int(p) != old]
        ),
        timeout=10,
        interval=0.005,
    )
    assert alive(int(new[0])), "a new supervisor runs"
    recovered_in = time.monotonic() - killed_at
    assert recovered_in < 10
    wait_until(lambda: server.session.get(server.url + "/api/health").status_code == 200, timeout=5)
    assert 503 in health, "health said degraded while no supervisor ran"
    assert not [p for p in old_ffmpeg if alive(p)], "the old ffmpeg did not outlive it"
    job = wait_until(lambda: (j := job_of(server, job_id))["status"] == "completed" and j)
    assert job["completedVariations"] == 3


def test_ffmpeg_killed_from_outside_is_retried_once(make_service, media):
    svc = make_service(encode_workers=1)
    job_id = svc.submit([media["slow"]], variations=1)["jobId"]
    pid = wait_until(lambda: running_ffmpeg(svc.settings.data_dir, job_id))[0]
    os.kill(pid, signal.SIGKILL)
    job = svc.wait(job_id, timeout=90)
    assert job["status"] == "completed"
    [v] = svc.store.get_job_variations(job_id)
    assert (v["attempts"], v["failures"]) == (2, 1)


def test_ffmpeg_killed_twice_fails_the_file_with_the_reason(make_service, media):
    svc = make_service(encode_workers=1)
    job_id = svc.submit([media["slow"]], variations=1)["jobId"]
    for _ in range(2):
        pid = wait_until(lambda: running_ffmpeg(svc.settings.data_dir, job_id))[0]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda pid=pid: pid not in running_ffmpeg(svc.settings.data_dir, job_id))
    job = svc.wait(job_id, timeout=30)
    assert job["status"] == "failed" and "killed (SIGKILL)" in job["error"], job
    assert job["files"][0]["status"] == "failed" and "killed (SIGKILL)" in job["files"][0]["error"]


def test_encode_worker_killed_mid_encode_is_retried(make_service, media):
    svc = make_service(encode_workers=1)
    job_id = svc.submit([media["slow"]], variations=1)["jobId"]
    ffmpeg_pid = wait_until(lambda: running_ffmpeg(svc.settings.data_dir, job_id))[0]
    worker = int(Path(f"/proc/{ffmpeg_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert worker in encode_workers(svc.supervisor.pid), "ffmpeg runs under an encode worker"
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not alive(ffmpeg_pid), timeout=5)  # it dies with its worker
    job = svc.wait(job_id, timeout=90)
    assert job["status"] == "completed", job
    [v] = svc.store.get_job_variations(job_id)
    assert (v["attempts"], v["failures"]) == (2, 1)
    assert not list((svc.settings.data_dir / "jobs" / job_id).rglob("*.part*")), "no partial file left"


def test_a_killed_supervisor_is_replaced_by_the_handle_that_watches_it(make_service, media):
    """SupervisorHandle.watch, as gunicorn's master runs it: a supervisor
    killed outright takes its encode workers along and is replaced; the new
    one's pid is the one the control block (and so /api/health) reports."""
    svc = make_service(encode_workers=1)
    svc.supervisor.watch(interval=0.2)
    old = svc.supervisor.pid
    assert svc.control.supervisor_pid() == old
    old_workers = wait_until(lambda: encode_workers(old))
    os.kill(old, signal.SIGKILL)
    new = wait_until(
        lambda: (pid := svc.control.supervisor_pid()) != old and svc.control.supervisor_alive() and pid, timeout=20
    )
    assert new == svc.supervisor.pid and alive(new) and not alive(old)
    wait_until(lambda: not any(alive(pid) for pid in old_workers), timeout=5)
    job = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"], timeout=30)
    assert job["status"] == "completed", job


def test_an_idle_encode_worker_killed_from_outside_is_replaced(make_service, media):
    svc = make_service(encode_workers=2)
    workers = wait_until(lambda: (found := encode_workers(svc.supervisor.pid)) and len(found) == 2 and found)
    os.kill(workers[0], signal.SIGKILL)
    replaced = wait_until(
        lambda: (found := encode_workers(svc.supervisor.pid)) and len(found) == 2 and workers[0] not in found and found,
        timeout=10,
    )
    assert workers[1] in replaced
    job = svc.wait(svc.submit([media["clip"]], variations=2)["jobId"], timeout=30)
    assert job["status"] == "completed", job
    assert [v["failures"] for v in svc.store.get_job_variations(job["jobId"])] == [0, 0]
    started = time.monotonic()
    svc.supervisor.stop()
    assert time.monotonic() - started < 10, "the supervisor stops on its own, not by SIGKILL at 20 s"
    wait_until(lambda: not any(alive(pid) for pid in replaced), timeout=5)


def test_stalled_ffmpeg_is_stopped_retried_then_failed(make_service, media, monkeypatch):
    monkeypatch.setenv("REAL_FFMPEG", FFMPEG)
    svc = make_service(
        encode_workers=1, stall_seconds=1, ffmpeg_binary=str(ROOT / "tests" / "fakes" / "stalling_ffmpeg.py")
    )
    job_id = svc.submit([media["clip"]], variations=1)["jobId"]
    job = svc.wait(job_id, timeout=30)
    assert job["status"] == "failed" and "no progress" in job["error"], job
    assert "stalled" not in job["error"], "ffmpeg's own words stay in the log; the reason is one sentence"
    assert [v["attempts"] for v in svc.store.get_job_variations(job_id)] == [2]
    assert ffmpeg_pids_writing_under(svc.settings.data_dir) == []


def test_two_servers_on_one_data_dir_run_one_supervisor(gunicorn_server, media):
    first = gunicorn_server(ENCODE_WORKERS=1)
    second = gunicorn_server(ENCODE_WORKERS=1, DATA_DIR=first.data_dir)
    assert wait_until(lambda: "another supervisor" in second.log_text(), timeout=10)
    health = second.session.get(second.url + "/api/health").json()
    assert health["status"] == "ok" and health["supervisor"] == "standby"
    job_id = submit(second, [media["clip"]], 1)
    wait_until(lambda: job_of(second, job_id)["status"] == "completed")
    first.stop()
    wait_until(lambda: "takes over" in second.log_text(), timeout=10)
    job_id = submit(second, [media["clip"]], 1)
    wait_until(lambda: job_of(second, job_id)["status"] == "completed")


def test_disk_full_mid_job_fails_the_job_and_the_service_carries_on(small_disk, media):
    disk = small_disk(128)
    svc = EmbeddedService(make_settings(disk / "data", encode_workers=1))
    filler = disk / "filler"
    try:
        job_id = svc.submit([media["slow"]], variations=1)["jobId"]  # 38 MB in, ~45 MB out expected
        wait_until(lambda: running_ffmpeg(svc.settings.data_dir, job_id), interval=0.01)
        with open(filler, "wb", buffering=0) as f:  # fill the disk, leaving a little room for the database
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            left = max(0, free - 300_000)
            try:
                while left > 0:  # ffmpeg writes meanwhile: the disk may be full before the filler is
                    left -= f.write(b"\0" * min(left, 1 << 20))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        job = svc.wait(job_id, timeout=60)
        assert job["status"] == "failed" and "the disk is full" in job["error"], job
        assert not [p for p in (svc.settings.data_dir / "jobs" / job_id).iterdir() if ".part" in p.name]
        filler.unlink()
        ok = svc.wait(svc.submit([media["clip"]], variations=1)["jobId"])
        assert ok["status"] == "completed", "the service stays up and other jobs work"
    finally:
        svc.close()


def test_a_variation_interrupted_three_times_fails_with_a_reason(media, tmp_path):
    """Three restarts in the middle of the same variation: it fails instead of
    looping forever; the job still ends."""
    settings = make_settings(tmp_path / "data", encode_workers=1)
    svc = EmbeddedService(settings)
    try:
        job_id = svc.submit([media["slow"]], variations=1)["jobId"]
        for _ in range(3):
            wait_until(lambda: running_ffmpeg(settings.data_dir, job_id))
            os.kill(svc.supervisor.pid, signal.SIGKILL)  # a crash: no graceful requeue
            svc.supervisor.process.wait(10)
            svc.supervisor = SupervisorHandle(settings, svc.control).start()
            assert svc.supervisor.wait_ready()
        job = svc.wait(job_id, timeout=30)
        assert job["status"] == "failed" and "interrupted 3 times" in job["error"], job
    finally:
        svc.close()


def test_an_outcome_the_store_cannot_take_is_kept_and_recorded_later(tmp_path, media, monkeypatch):
    """A locked or failing database while an outcome comes in: the outcome is
    kept for the next tick instead of leaving the variation "processing"."""
    settings = make_settings(tmp_path / "data")
    app = create_app(settings)
    client = app.test_client()
    token = client.post("/api/auth", json={"password": PASSWORD}).get_json()["token"]
    r = client.post(
        "/api/jobs",
        headers={"Authorization": f"Bearer {token}"},
        content_type="multipart/form-data",
        data={"videos": [(open(media["clip"], "rb"), "clip.mp4")], "variations": "1"},
    )
    assert r.status_code == 202
    control = ControlBlock.create(settings.data_dir / "run")
    supervisor = Supervisor(settings, control)
    supervisor.store = store = Store(settings.database)
    [variation] = store.get_job_variations(r.get_json()["jobId"])
    task = supervisor.claim()
    assert task["id"] == variation["id"]
    outcome = _Outcome(task, {"outcome": "failed", "error": "ffmpeg exited with 1"})
    supervisor.unrecorded.append(outcome)

    def locked(*args, **kwargs):
        raise OperationalError("UPDATE variations …", {}, Exception("database is locked"))

    monkeypatch.setattr(store, "record_outcome", locked)
    with pytest.raises(OperationalError):
        supervisor.record_outcomes()
    assert supervisor.unrecorded == [outcome], "kept for the next tick"
    assert store.get_variation(variation["id"])["status"] == "processing"
    monkeypatch.undo()
    supervisor.record_outcomes()
    row = store.get_variation(variation["id"])
    assert (row["status"], row["failures"], row["error"]) == ("queued", 1, "ffmpeg exited with 1")
    assert supervisor.unrecorded == []


def test_an_idle_supervisor_asks_the_database_nothing_and_new_work_wakes_it(tmp_path, media, monkeypatch):
    """On SQLite, a turn of the loop with nothing changed in the database (the
    store's ChangeWatch) sends no statement: no claim, no cancel poll, no
    progress roll-up. A new job wakes the loop at once (the web worker's
    datagram to the supervisor's wake-up socket), not at its next turn, and
    its first variation is claimed."""
    monkeypatch.setattr(supervisor_module, "QUIET_LOOK_SECONDS", 3600)  # no look by the clock in this test
    settings = make_settings(tmp_path / "data")
    control = ControlBlock.create(settings.data_dir / "run")
    app = create_app(settings, control)
    client = app.test_client()
    token = client.post("/api/auth", json={"password": PASSWORD}).get_json()["token"]
    supervisor = Supervisor(settings, control)
    supervisor.store = store = Store(settings.database)
    supervisor.changes = store.watch_changes()
    supervisor._last_heartbeat = supervisor._last_reclaim = float("inf")  # the timed writes, not under test
    ours, theirs = multiprocessing.Pipe()
    never, _ = os.pipe()
    supervisor.workers = [_Worker(SimpleNamespace(is_alive=lambda: True, sentinel=never), ours)]
    supervisor.open_wake_socket()
    statements = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        supervisor.tick()
        assert any("FROM variations" in s for s in statements), "the first turn looks for work"
        statements.clear()
        for _ in range(6):
            supervisor.tick()
        assert statements == [], "nothing changed, nothing asked"
        r = client.post(
            "/api/jobs",
            headers={"Authorization": f"Bearer {token}"},
            content_type="multipart/form-data",
            data={"videos": [(open(media["clip"], "rb"), "clip.mp4")], "variations": "1"},
        )
        assert r.status_code == 202
        monkeypatch.setattr(supervisor_module, "TICK_SECONDS", 60)
        started = time.monotonic()
        supervisor.tick()
        assert time.monotonic() - started < 10, "woken by the new job, not by the end of its wait"
        assert theirs.poll(1) and theirs.recv()["job_id"] == r.get_json()["jobId"], "claimed in that turn"
        assert supervisor.workers[0].task is not None
    finally:
        supervisor.changes.close()
        supervisor.control.close_wake_socket(supervisor.wake)
    control.wake_supervisor()  # nobody listens: dropped, no error


def test_a_supervisor_that_stops_leaves_a_newer_one_s_wake_up_address(tmp_path):
    """An old supervisor closing its wake-up socket after a replacement has
    published its own must not switch the replacement's wake-ups off."""
    made = ControlBlock.create(tmp_path / "run")
    old, new = ControlBlock(made.path), ControlBlock(made.path)  # two supervisors' mappings of one block
    old_socket = old.open_wake_socket()
    new_socket = new.open_wake_socket()
    old.close_wake_socket(old_socket)
    made.wake_supervisor()
    assert new_socket.recv(64) == b"w", "the newer supervisor is still woken"
    new.close_wake_socket(new_socket)
    made.wake_supervisor()  # nobody listens: dropped, no error
