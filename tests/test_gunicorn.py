"""The real deployment shape: gunicorn's master starts one supervisor, web
workers share the cancel table and accept each other's tokens."""
from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from .conftest import PASSWORD, ROOT


def wait_done(server, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.session.get(f"{server.url}/api/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(job)


def submit(server, paths, variations):
    files = [("videos", (Path(p).name, open(p, "rb"), "video/mp4")) for p in paths]
    r = server.session.post(f"{server.url}/api/jobs", files=files, data={"variations": str(variations)})
    assert r.status_code == 202, r.text
    return r.json()


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
    lines = [l for l in server.log_text().splitlines() if "Generated password" in l]
    assert len(lines) == 1
    password = re.search(r"Video Refresher: (\S+)", lines[0]).group(1)
    shown = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "password"], cwd=ROOT,
                           env={**server.env, "AUTH_PASSWORD": ""}, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == password, "kept in the database, shown again on request"
    assert not (server.data_dir / "auth_password").exists(), "no longer a file a wiped disk would lose"
    assert requests.post(server.url + "/api/auth", json={"password": password}).status_code == 200
    assert requests.post(server.url + "/api/auth", json={"password": PASSWORD}).status_code == 401
    server.stop()
    again = gunicorn_server(AUTH_PASSWORD="", DATA_DIR=server.data_dir)
    assert "Generated password" not in again.log_text().split("Starting gunicorn")[-1]
    assert requests.post(again.url + "/api/auth", json={"password": password}).status_code == 200


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
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
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
