"""`python -m refresher.client` end to end, as a script would run it: a
subprocess against a real gunicorn with the real supervisor and real ffmpeg."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from refresher.client.resumable import MAX_PATCH_BYTES, MIN_PATCH_BYTES, PART_BYTES, next_patch_bytes

from .conftest import FFMPEG, PASSWORD, ROOT
from .support.proxy import Relay
from .support.servers import free_port, wait_until

CONTROL_CHARACTERS = re.compile(r"[\r\x1b\x08]")  # what progress bars draw with


@pytest.fixture
def client_env(tmp_path) -> dict:
    """An environment with no token of the person running the tests, and a
    config folder of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFRESHER_")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    return env


def for_server(env: dict, server) -> dict:
    token = server.session.headers["Authorization"].removeprefix("Bearer ")
    return {**env, "REFRESHER_URL": server.url, "REFRESHER_TOKEN": token}


def command(*args) -> list[str]:
    return [sys.executable, "-m", "refresher.client", *map(str, args)]


def run(env: dict, *args, timeout=120, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*args),
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _ctrl_c_as_at_a_shell() -> None:
    # A test run started in the background (`cmd &` in a script) has SIGINT
    # ignored, and a child inherits that; a person's Ctrl-C reaches a client
    # whose SIGINT is not ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(env: dict, *args, **kw) -> subprocess.Popen:
    options = dict(
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        preexec_fn=_ctrl_c_as_at_a_shell,
    )
    options.update(kw)
    return subprocess.Popen(command(*args), **options)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def wait_for_status(server, job_id, statuses, timeout=60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.session.get(f"{server.url}/api/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")


def test_the_client_never_imports_the_server():
    """Only the limits the API promises (plain constants) are shared."""
    code = (
        "import sys, refresher.client.cli, refresher.client.api\n"
        "server = [m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug', 'config', 'sqlalchemy')\n"
        "          or (m.startswith('refresher.') and not m.startswith('refresher.client')\n"
        "              and m != 'refresher.contract')]\n"
        "print(server)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_usage_errors_and_an_unreachable_server(client_env, tmp_path):
    env = {**client_env, "REFRESHER_URL": f"http://127.0.0.1:{free_port()}", "REFRESHER_TOKEN": "vr_x"}
    r = run(env, "list")
    assert r.returncode == 7 and "cannot reach" in one_line(r.stderr)
    r = run(env, "submit", tmp_path / "missing.mp4")
    assert r.returncode == 2 and "missing.mp4" in one_line(r.stderr)
    r = run(env, "submit", "-n", "21", tmp_path / "missing.mp4")
    assert r.returncode == 2
    r = run({**client_env, "REFRESHER_URL": env["REFRESHER_URL"]}, "list")
    assert r.returncode == 5 and "no token" in one_line(r.stderr)
    help_text = run(env, "--help").stdout
    assert "exit codes" in help_text and "REFRESHER_TOKEN" in help_text
    assert "8    download: the job has no outputs" in help_text


def test_a_url_without_a_scheme_is_http_and_a_bad_one_is_a_usage_error(client_env):
    port = free_port()
    env = {**client_env, "REFRESHER_TOKEN": "vr_x"}
    r = run(env, "--url", f"127.0.0.1:{port}", "list")
    assert r.returncode == 7 and f"cannot reach http://127.0.0.1:{port}" in one_line(r.stderr)
    r = run({**env, "REFRESHER_URL": f"localhost:{port}"}, "list")
    assert r.returncode == 7 and "Traceback" not in r.stderr
    for bad in ("ftp://example.org", "http://", "localhost:port", "http://[::1"):
        r = run(env, "--url", bad, "list")
        assert r.returncode == 2 and "is not a server address" in one_line(r.stderr), (bad, r.stderr)


def test_submit_wait_download_and_the_other_commands(gunicorn_server, media, client_env, tmp_path):
    server = gunicorn_server(ENCODE_WORKERS=2)
    env = for_server(client_env, server)

    zip_path = tmp_path / "out.zip"
    r = run(env, "submit", media["clip"], media["clip2"], "-n", 2, "--seed", "abc", "--wait", "--download", zip_path)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", job_id)
    assert not CONTROL_CHARACTERS.search(r.stdout + r.stderr), "piped output has no progress bars"
    assert "completed" in r.stderr
    assert "clip.mp4: done" in r.stderr and "second clip.mp4: done" in r.stderr, "a progress report per file"

    with zipfile.ZipFile(zip_path) as z:
        assert z.testzip() is None
        names = z.namelist()
        manifest = json.loads(z.read("manifest.json"))
        assert all(info.compress_type == zipfile.ZIP_STORED for info in z.infolist())
    videos = sorted(n for n in names if n.endswith(".mp4"))
    assert len(videos) == 4 and len({n.split("/")[0] for n in videos}) == 2, "one folder per source"
    assert sorted(o["path"] for o in manifest["outputs"]) == videos
    assert {o["source"] for o in manifest["outputs"]} == {"clip.mp4", "second clip.mp4"}
    assert manifest["jobId"] == job_id and manifest["seed"] == "abc"
    assert not list(tmp_path.glob(".out.zip.*")), "no partial download is left"

    # --json everywhere parses, and says the same as the server
    status = run(env, "status", job_id, "--json")
    assert status.returncode == 0
    job = json.loads(status.stdout)
    assert job["jobId"] == job_id and job["status"] == "completed" and job["completedVariations"] == 4
    listed = json.loads(run(env, "--json", "list", "--limit", 5).stdout)
    assert [j["id"] for j in listed] == [job_id]
    text = run(env, "status", job_id)
    assert text.returncode == 0 and f"job {job_id}: completed 100%" in text.stdout

    downloaded = run(env, "download", job_id, "-o", tmp_path / "again.zip", "--json")
    assert downloaded.returncode == 0
    info = json.loads(downloaded.stdout)
    assert info["size"] == zip_path.stat().st_size == (tmp_path / "again.zip").stat().st_size

    queued = run(env, "submit", media["vertical"], "-n", 1, "--json")
    assert queued.returncode == 0
    created = json.loads(queued.stdout)
    assert created["status"] == "queued" and created["totalVariations"] == 1
    waited = run(env, "status", created["jobId"], "--wait", "--json")
    assert waited.returncode == 0 and json.loads(waited.stdout)["status"] == "completed"

    # a job that has finished cannot be cancelled
    r = run(env, "cancel", job_id)
    assert r.returncode == 1 and "already completed" in one_line(r.stderr)


def test_errors_give_an_exit_code_and_one_line(gunicorn_server, client_env, media):
    server = gunicorn_server(ENCODE_WORKERS=1)
    env = for_server(client_env, server)

    for bad in ("vr_not-a-real-token", "garbage"):
        r = run({**env, "REFRESHER_TOKEN": bad}, "status", "whatever")
        assert r.returncode == 5 and "HTTP 401" in one_line(r.stderr) and r.stdout == ""
    r = run({**env, "REFRESHER_TOKEN": "garbage"}, "submit", media["clip"], "--wait")
    assert r.returncode == 5 and "HTTP 401" in one_line(r.stderr), "refused before any upload"

    r = run(env, "status", "no-such-job")
    assert r.returncode == 6 and "HTTP 404" in one_line(r.stderr)
    r = run(env, "download", "no-such-job", "--json")
    assert r.returncode == 6 and r.stdout == "" and "HTTP 404" in one_line(r.stderr)
    r = run(env, "cancel", "no-such-job")
    assert r.returncode == 6

    r = run(env, "submit", media["not_video"])
    assert r.returncode == 1 and "HTTP 415" in r.stderr.splitlines()[-1] and "notes.mp4" in r.stderr

    # a job cancelled before any variation was made has nothing to download: its own exit code
    busy = run(env, "submit", media["slow"], "-n", 1).stdout.strip()
    empty = run(env, "submit", media["clip"], "-n", 1).stdout.strip()
    assert run(env, "cancel", empty).returncode == 0
    r = run(env, "download", empty)
    assert r.returncode == 8 and "has no outputs" in one_line(r.stderr) and "cancelled" in r.stderr
    run(env, "cancel", busy)


def test_login_saves_a_private_token(gunicorn_server, client_env):
    server = gunicorn_server(ENCODE_WORKERS=1)
    env = {**client_env, "REFRESHER_URL": server.url}

    for save in ((), ("--save",)):
        r = run({**env, "REFRESHER_PASSWORD": "wrong"}, "login", *save)
        line = one_line(r.stderr)
        assert r.returncode == 5 and "password was refused" in line and "wrong password" in line
        assert "log in again" not in line and "REFRESHER_TOKEN" not in line

    printed = run({**env, "REFRESHER_PASSWORD": PASSWORD}, "login")
    assert printed.returncode == 0 and len(printed.stdout.strip()) > 20

    r = run({**env, "REFRESHER_PASSWORD": PASSWORD}, "login", "--save")
    assert r.returncode == 0 and r.stdout == ""
    token_file = Path(env["XDG_CONFIG_HOME"]) / "video-refresher" / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert run(env, "list").returncode == 0, "the saved token is used"

    r = subprocess.run(
        command("login", "--password-stdin", "--json"),
        cwd=ROOT,
        env=env,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and set(json.loads(r.stdout)) == {"token", "expiresAt"}

    saved = token_file.read_text().strip()
    r = run(env, "logout")
    assert r.returncode == 0 and "signed out" in r.stderr and not token_file.exists()
    gone = server.session.get(f"{server.url}/api/jobs", headers={"Authorization": f"Bearer {saved}"})
    assert gone.status_code == 401, "the session ended on the server, not only on this machine"
    r = run({**env, "REFRESHER_TOKEN": saved}, "logout")
    assert r.returncode == 5 and "HTTP 401" in one_line(r.stderr)


def _submit_long_job(env, media, *extra, **popen) -> tuple[subprocess.Popen, str]:
    """Start `submit --wait` on a job that runs for a while; return it and the job id."""
    proc = start(env, "submit", media["long"], "-n", 12, "--wait", *extra, **popen)
    job_id = proc.stdout.readline().strip()
    assert job_id, proc.stderr.read() if proc.poll() is not None else "no job id"
    return proc, job_id


def test_cancel_a_running_job(gunicorn_server, media, client_env):
    server = gunicorn_server(ENCODE_WORKERS=1)
    env = for_server(client_env, server)

    # `submit --wait` on a job that somebody cancels ends with the cancelled code
    proc, job_id = _submit_long_job(env, media)
    wait_for_status(server, job_id, ("processing",))
    r = run(env, "cancel", job_id)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"job {job_id} cancelled:")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 4, stderr
    assert stderr.strip().splitlines()[-1].startswith(f"error: job {job_id} was cancelled")
    assert not CONTROL_CHARACTERS.search(stdout + stderr)

    again = run(env, "cancel", job_id, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "cancelled", "twice is safe"
    assert json.loads(run(env, "status", job_id, "--json").stdout)["status"] == "cancelled"


def test_ctrl_c_without_a_terminal_leaves_the_job_running(gunicorn_server, media, client_env):
    server = gunicorn_server(ENCODE_WORKERS=1)
    env = for_server(client_env, server)
    proc, job_id = _submit_long_job(env, media)
    wait_for_status(server, job_id, ("processing",))
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    last = stderr.strip().splitlines()[-1]
    assert "keeps running" in last and "not cancelled" in last
    assert server.session.get(f"{server.url}/api/jobs/{job_id}").json()["status"] == "processing"
    server.session.post(f"{server.url}/api/jobs/{job_id}/cancel")


def test_ctrl_c_at_a_terminal_offers_to_cancel(gunicorn_server, media, client_env):
    server = gunicorn_server(ENCODE_WORKERS=1)
    env = for_server(client_env, server)
    terminal, terminal_side = pty.openpty()
    try:
        proc, job_id = _submit_long_job(env, media, stdin=terminal_side)
        wait_for_status(server, job_id, ("processing",))
        proc.send_signal(signal.SIGINT)
        prompt = ""
        deadline = time.monotonic() + 30
        while "[y/N]" not in prompt and time.monotonic() < deadline:
            prompt += os.read(proc.stderr.fileno(), 4096).decode()
        assert f"Cancel job {job_id} on the server? [y/N]" in prompt
        os.write(terminal, b"y\n")
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        os.close(terminal)
        os.close(terminal_side)
    assert proc.returncode == 4, stderr
    assert f"job {job_id} cancelled" in stdout
    assert server.session.get(f"{server.url}/api/jobs/{job_id}").json()["status"] == "cancelled"


def test_names_retry_resume_and_rerun(gunicorn_server, media, client_env, tmp_path):
    switch = tmp_path / "fail-clip2"
    switch.touch()
    server = gunicorn_server(
        ENCODE_WORKERS=2,
        FFMPEG_BINARY=ROOT / "tests" / "fakes" / "failing_ffmpeg.py",
        REAL_FFMPEG=FFMPEG,
        FAIL_SWITCH=switch,
        FAIL_INPUT_SIZE=media["clip2"].stat().st_size,
    )
    env = for_server(client_env, server)

    r = run(env, "submit", media["clip2"], "-n", 1, "--name", "Spring sale", "--wait")
    assert r.returncode == 3, r.stderr
    job_id = r.stdout.strip()
    switch.unlink()
    r = run(env, "retry", job_id, "--wait")
    assert r.returncode == 0, r.stderr
    assert f"job {job_id}: completed 100%" in r.stdout and "name: Spring sale" in r.stdout
    r = run(env, "retry", job_id)
    assert r.returncode == 1 and "no failed variations" in one_line(r.stderr) and "HTTP 409" in r.stderr
    r = run(env, "resume", job_id)
    assert r.returncode == 1 and "only a cancelled job can be resumed" in one_line(r.stderr)

    r = run(env, "rerun", job_id, "-n", 2, "--seed", "again", "--name", "Second go", "--wait", "--json")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert again["jobId"] != job_id and again["status"] == "completed" and again["completedVariations"] == 2
    assert again["name"] == "Second go" and again["seed"] == "again"
    listed = run(env, "list")
    assert "Second go" in listed.stdout and "Spring sale" in listed.stdout

    proc = start(env, "submit", media["long"], "-n", 4, "--wait")
    long_job = proc.stdout.readline().strip()
    wait_until(
        lambda: server.session.get(f"{server.url}/api/jobs/{long_job}").json()["completedVariations"] >= 1,
        interval=0.02,
    )
    assert run(env, "cancel", long_job).returncode == 0
    assert proc.wait(timeout=60) == 4
    r = run(env, "resume", long_job, "--wait")
    assert r.returncode == 0, r.stderr
    assert f"job {long_job}: completed 100% (4 of 4 variations done)" in r.stdout


def test_a_patch_is_sized_to_the_speed_the_last_one_went():
    mb = 1024 * 1024
    assert next_patch_bytes(10 * mb, 0.1) == MAX_PATCH_BYTES, "a fast link: the largest PATCH"
    assert next_patch_bytes(10 * mb, 2.0) == 25 * mb, "5 MB/s: five seconds' worth"
    assert next_patch_bytes(10 * mb, 30.0) == MIN_PATCH_BYTES, "a slow link: never below the first"
    assert next_patch_bytes(10 * mb, 0.0) == MAX_PATCH_BYTES
    for sent, seconds in [(10 * mb, 1.7), (7 * mb, 0.9), (mb, 0.01)]:
        assert next_patch_bytes(sent, seconds) % PART_BYTES == 0, "whole parts: no tail waits between PATCHes"


@pytest.fixture
def grainy(tmp_path) -> Path:
    """A 3 s clip of 12 MB (noise, losslessly coded): more than one PATCH of the client."""
    path = tmp_path / "grainy.mp4"
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:duration=3",
         "-vf", "noise=alls=100:allf=t", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(path)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return path


def test_submit_resumes_after_a_dropped_connection_and_after_ctrl_c(gunicorn_server, client_env, grainy):
    server = gunicorn_server(ENCODE_WORKERS=1)
    env = for_server(client_env, server)
    size = grainy.stat().st_size
    assert size > MIN_PATCH_BYTES

    # the connection drops 3 MB into the first PATCH: the client asks where it got to and goes on
    relay = Relay(server.port)
    relay.cut_after(3 * 1024 * 1024)
    r = run({**env, "REFRESHER_URL": relay.url}, "submit", grainy, "-n", 1, "--wait")
    assert r.returncode == 0, r.stderr
    assert "grainy.mp4: done" in r.stderr
    assert relay.sent <= size + MIN_PATCH_BYTES + 64 * 1024  # (64 KB: the requests' heads)
    relay.close()

    # Ctrl-C halfway: the same command again goes on where it stopped
    slow = Relay(server.port, rate=2 * 1024 * 1024)
    proc = start({**env, "REFRESHER_URL": slow.url}, "submit", grainy, "-n", 1)
    wait_until(lambda: slow.sent > 4 * 1024 * 1024, timeout=30)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "run the same command again" in stderr
    ledger = Path(env["XDG_CONFIG_HOME"]) / "video-refresher" / "uploads.json"
    assert len(json.loads(ledger.read_text())) == 1
    slow.rate, slow.sent = None, 0  # (the same server address: uploads are remembered per server)
    r = run({**env, "REFRESHER_URL": slow.url}, "submit", grainy, "-n", 1, "--wait")
    assert r.returncode == 0, r.stderr
    assert slow.sent < size - 3 * 1024 * 1024, "the second run sent only what the first had not"
    assert json.loads(ledger.read_text()) == {}, "an upload made into a job is forgotten"
    slow.close()
