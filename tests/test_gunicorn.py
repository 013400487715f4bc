"""The real deployment shape: gunicorn's master starts one supervisor, web
workers share the cancel table and accept each other's tokens."""

from __future__ import annotations

import ctypes
import signal
import ipaddress
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from refresher.store import Store

from .conftest import FFMPEG, PASSWORD, ROOT
from .support.servers import free_port, wait_until
from .support.servers import START_COMMANDS, run_python, submit, wait_done


def test_job_through_gunicorn_and_clean_shutdown(gunicorn_server, media):
    server = gunicorn_server(WEB_CONCURRENCY=2, ENCODE_WORKERS=2)
    job = wait_done(server, submit(server, [media["clip"], media["clip2"]], 3)["jobId"])
    assert job["status"] == "completed" and job["completedVariations"] == 6
    for f in job["files"]:
        for o in f["outputs"]:
            r = server.session.get(server.url + o["url"])
            assert r.status_code == 200 and len(r.content) == o["size"]
    log = server.log_text()
    assert log.count("supervisor") >= 1 and len(re.findall(r"supervisor \d+ running", log)) == 1
    elapsed = server.stop()
    assert elapsed < 30
    assert server.leftovers() == [], "every process of the server is gone"


def test_token_accepted_by_every_worker(gunicorn_server):
    import requests

    server = gunicorn_server(WEB_CONCURRENCY=3)
    token = server.session.headers["Authorization"]
    # New connections each time, so the kernel spreads them over the workers;
    # the access log names the worker that answered.
    for _ in range(300):
        r = requests.get(server.url + "/api/jobs", headers={"Authorization": token})
        assert r.status_code == 200
        pids = set(re.findall(r'"GET /api/jobs HTTP/1.1" 200 .* pid=<?(\d+)', server.log_text()))
        if len(pids) == 3:
            break
    assert len(pids) == 3, f"requests reached only workers {pids}"
    assert "401" not in re.findall(r'"GET /api/jobs HTTP/1.1" (\d+)', server.log_text())


def test_an_older_install_keeps_its_generated_password(tmp_path, gunicorn_server):
    import requests

    data_dir = tmp_path / "older"
    data_dir.mkdir()
    (data_dir / "auth_password").write_text("kept-from-before\n")
    server = gunicorn_server(AUTH_PASSWORD="", DATA_DIR=data_dir)
    assert "Generated password" not in server.log_text()
    assert requests.post(server.url + "/api/auth", json={"password": "kept-from-before"}).status_code == 200


def test_generated_password_printed_once_and_kept(tmp_path, gunicorn_server):
    import requests

    server = gunicorn_server(AUTH_PASSWORD="", WEB_CONCURRENCY=2)
    # The fixture logged in with the test password; with AUTH_PASSWORD empty a
    # password is generated instead, so find it in the log.
    lines = [line for line in server.log_text().splitlines() if "Generated password" in line]
    assert len(lines) == 1
    password = re.search(r"Video Refresher: (\S+)", lines[0]).group(1)
    shown = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "password"],
        cwd=ROOT,
        env={**server.env, "AUTH_PASSWORD": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == password, "kept in the database, shown again on request"
    assert not (server.data_dir / "auth_password").exists(), "no longer a file a wiped disk would lose"
    assert requests.post(server.url + "/api/auth", json={"password": password}).status_code == 200
    assert requests.post(server.url + "/api/auth", json={"password": PASSWORD}).status_code == 401
    server.stop()
    again = gunicorn_server(AUTH_PASSWORD="", DATA_DIR=server.data_dir)
    assert "Generated password" not in again.log_text().split("Starting gunicorn")[-1]
    assert requests.post(again.url + "/api/auth", json={"password": password}).status_code == 200


def supervisor_pid(server) -> int:
    pids = re.findall(r"supervisor (\d+) running", server.log_text())
    assert len(pids) == 1, server.log_text()
    return int(pids[0])


def web_worker_pids(server) -> set[int]:
    return set(map(int, re.findall(r"Booting worker with pid: (\d+)", server.log_text())))


def test_web_workers_come_and_go_and_a_reload_keeps_the_supervisor(gunicorn_server, media):
    """gunicorn forks web workers from the master, and a worker that exits
    (max_requests here; a timeout or a crash alike) used to run the master's
    atexit stop: the supervisor got SIGTERM and its control block was
    deleted, for good. A reload (kill -HUP, gunicorn's documented way) did
    the same, and its new workers got no control block."""
    server = gunicorn_server("--max-requests=4", WEB_CONCURRENCY=2, ENCODE_WORKERS=1)
    pid = supervisor_pid(server)
    control = list((server.data_dir / "run").glob("control-*"))
    assert len(control) == 1
    first_workers = web_worker_pids(server)
    for _ in range(30):  # new connections: the kernel spreads them over the workers
        assert requests.get(server.url + "/api/health", timeout=10).status_code == 200
    wait_until(lambda: len(web_worker_pids(server) - first_workers) >= 4, timeout=30)

    before_reload = web_worker_pids(server)
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(web_worker_pids(server) - before_reload) >= 2, timeout=30)
    wait_until(lambda: not any(_alive(p) for p in before_reload), timeout=30)  # every old worker gone

    os.kill(pid, 0)  # the same supervisor, never stopped
    assert supervisor_pid(server) == pid and "starting a new one" not in server.log_text()
    assert list((server.data_dir / "run").glob("control-*")) == control, "its control block is still there"
    health = server.session.get(server.url + "/api/health").json()
    assert health["status"] == "ok" and health["supervisor"] == "running", health
    job = wait_done(server, submit(server, [media["clip"]], 2)["jobId"])
    assert job["status"] == "completed"
    assert "Traceback" not in server.log_text()
    server.stop()
    assert server.leftovers() == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port` (from /proc/net/tcp*)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, _remote, state = line.split()[1:4]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # each 32-bit word is in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(words)) if width == 8 else str(ipaddress.ip_address(words)))
    return found


def test_servers_the_tests_start_listen_on_loopback_only(gunicorn_server):
    server = gunicorn_server()
    assert listening_addresses(server.port) == {"127.0.0.1"}


def test_no_redirect_names_the_host_a_client_sent(gunicorn_server):
    server = gunicorn_server()
    for path in ("/api//jobs", "/api/jobs//x", "/static//app.css"):
        r = server.session.get(server.url + path, headers={"Host": "evil.example"}, allow_redirects=False)
        assert r.status_code == 404 and "Location" not in r.headers, (path, r.status_code, r.headers)
        assert "error" in r.json()
    # a request target in absolute form, without a path
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET http://evil.example HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
    assert b"evil.example" not in head.split(b"\r\n\r\n")[0], head


# --- a DATA_DIR that cannot be used ------------------------------------------------------

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _bound_by_permissions() -> None:
    """In the child, before exec: root gives up the capabilities that let it
    write what file permissions forbid, so that a chmod binds it as it binds
    any user (tests run as root in CI)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _corrupt_database(data_dir: Path) -> tuple[Path, str]:
    data_dir.mkdir()
    (data_dir / "refresher.db").write_bytes(b"not a database, just bytes\n" * 400)
    return data_dir / "refresher.db", "file is not a database"


def _read_only_database(data_dir: Path) -> tuple[Path, str]:
    data_dir.mkdir()
    store = Store(data_dir / "refresher.db")
    store.migrate()
    store.close()
    (data_dir / "refresher.db").chmod(0o444)
    return data_dir / "refresher.db", "readonly database"


def _read_only_data_dir(data_dir: Path) -> tuple[Path, str]:
    data_dir.mkdir()
    data_dir.chmod(0o555)
    return data_dir, "Permission denied"


@pytest.mark.parametrize("command", START_COMMANDS)
@pytest.mark.parametrize("damage", [_corrupt_database, _read_only_database, _read_only_data_dir])
def test_an_unusable_data_dir_stops_the_start_with_one_line(tmp_path, damage, command):
    path, problem = damage(tmp_path / "data")
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "DATA_DIR": str(tmp_path / "data"),
        "AUTH_PASSWORD": PASSWORD,
        "FFMPEG_BINARY": FFMPEG,
    }
    preexec = None
    if os.geteuid() == 0:
        preexec = _bound_by_permissions
        try:
            subprocess.run(["true"], preexec_fn=preexec, check=True)
        except subprocess.SubprocessError as exc:  # no CAP_SETPCAP
            pytest.skip(f"root cannot give up CAP_DAC_OVERRIDE here, so no permission binds it: {exc}")
    r = run_python(START_COMMANDS[command], env, preexec_fn=preexec)
    output = (r.stdout + r.stderr).strip()
    assert r.returncode == 2, output
    said = [line for line in output.splitlines() if "cannot start" in line]
    assert len(said) == 1 and str(path) in said[0] and problem in said[0], output
    assert said[0].startswith("Video Refresher cannot start: ")
    assert "Traceback" not in output and len(output.splitlines()) <= 2, output  # gunicorn says it starts


# --- uploads cut short by a restart -----------------------------------------------------


class SlowUpload:
    """POST /api/jobs over a raw socket, the body sent in two halves."""

    def __init__(self, server, video: Path):
        part = (
            b'--XyZ\r\nContent-Disposition: form-data; name="videos"; filename="cut.mp4"\r\n'
            b"Content-Type: video/mp4\r\n\r\n" + video.read_bytes() + b"\r\n"
        )
        self.body = part + b'--XyZ\r\nContent-Disposition: form-data; name="variations"\r\n\r\n1\r\n--XyZ--\r\n'
        head = (
            f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {server.session.headers['Authorization']}\r\n"
            f"Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {len(self.body)}\r\n\r\n"
        )
        self.half = len(part) // 2
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.sock.sendall(head.encode() + self.body[: self.half])

    def finish(self) -> int:
        self.sock.sendall(self.body[self.half :])
        answer = b""
        while b"\r\n" not in answer:
            chunk = self.sock.recv(4096)
            assert chunk, answer
            answer += chunk
        self.sock.close()
        return int(answer.split()[1])


def new_upload_folder(incoming: Path, before: set[Path]) -> Path:
    """The upload folder that appears beside `before`, once data is in it."""

    def arrived():
        folders = set(incoming.iterdir()) - before if incoming.is_dir() else set()
        return next((f for f in folders if any(p.stat().st_size for p in f.iterdir())), None)

    return wait_until(arrived, timeout=30)


def test_an_upload_cut_by_a_restart_is_gone_once_the_server_is_ready(gunicorn_server, media):
    """SIGTERM in the middle of an upload leaves its part in DATA_DIR/incoming.
    The next start removes it before it serves, and never touches an upload
    that another live server on the same DATA_DIR is receiving."""
    first = gunicorn_server("--graceful-timeout", "2")
    incoming = first.data_dir / "incoming"
    video = media["long"]
    assert video.stat().st_size > 256 * 1024, "half of it is more than a slow client's buffer"

    # a second server starts on the same DATA_DIR while the first receives an upload
    live = SlowUpload(first, video)
    live_folder = new_upload_folder(incoming, set())
    web_only = gunicorn_server(DATA_DIR=first.data_dir, ENCODE_WORKERS=0)
    assert live_folder.exists(), "an upload another server is receiving is left alone"
    assert live.finish() == 202

    # the first server stops in the middle of an upload, while the other receives one
    cut = SlowUpload(first, video)
    cut_folder = new_upload_folder(incoming, set())
    receiving = SlowUpload(web_only, video)
    receiving_folder = new_upload_folder(incoming, {cut_folder})
    first.stop()
    cut.sock.close()
    assert cut_folder.exists(), "a stopped server leaves its partial upload behind"

    gunicorn_server(DATA_DIR=first.data_dir)  # returns once it answers /api/health
    assert not cut_folder.exists(), "the partial upload is gone by the time the server is ready"
    assert receiving_folder.exists(), "an upload another server is receiving is left alone"
    assert receiving.finish() == 202
