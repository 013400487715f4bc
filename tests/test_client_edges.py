"""The command-line client at its edges, in-process against a real app and
supervisor served over loopback HTTP: what a new user types wrong (a token
with a line break, https:// on a plain-HTTP port, a URL ending in /api), an
audio-only file, a download onto an existing file, and `delete`."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from refresher.arrival import Arrival, Refusal
from refresher.client import cli, credentials
from refresher.client.api import CONNECT_TIMEOUT

from .conftest import EmbeddedService, make_settings


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(the service, its http:// URL), one for the module."""
    service = EmbeddedService(make_settings(tmp_path_factory.mktemp("data"), encode_workers=1))
    server = make_server("127.0.0.1", 0, service.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield service, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    service.close()


@pytest.fixture
def run(served, monkeypatch, tmp_path, capsys):
    """run(*args, token=…) → (exit code, stdout, stderr) of the client."""
    service, url = served
    token = service.headers["Authorization"].removeprefix("Bearer ")
    for name in ("REFRESHER_URL", "REFRESHER_TOKEN", "REFRESHER_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)

    def run_client(*args, token: str | None = token, url: str = url):
        monkeypatch.setenv("REFRESHER_URL", url)
        if token is not None:
            monkeypatch.setenv("REFRESHER_TOKEN", token)
        code = cli.main([str(a) for a in args], prog="refresher")
        out, err = capsys.readouterr()
        return code, out, err

    return run_client


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def finished_job(served, media) -> str:
    service, _ = served
    job_id = service.submit([media["clip"]], variations=1)["jobId"]
    assert service.wait(job_id)["status"] == "completed"
    return job_id


def test_a_token_with_a_line_break_around_it_works_and_one_inside_is_one_line(run, served):
    token = served[0].headers["Authorization"].removeprefix("Bearer ")
    for wrapped in (token + "\r\n", token + "\n", f" {token}\r"):
        code, _, err = run("list", token=wrapped)
        assert code == 0, err
    code, _, err = run("list", token=token[:5] + "\r\n" + token[5:])
    assert code == 5 and "line break" in one_line(err)


def test_a_url_ending_in_api_names_the_same_server(run, served, finished_job):
    _, url = served
    for given in (url + "/api", url + "/api/", url + "/API/"):
        code, out, err = run("status", finished_job, url=given)
        assert code == 0 and "completed" in out, err
    assert credentials.server_url("example.com:8000/api/") == "http://example.com:8000"
    assert credentials.server_url("https://example.com/refresher/api") == "https://example.com/refresher"


def _client_hello() -> bytes:
    """The first bytes an https:// client sends."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_https_on_a_plain_http_port_is_answered_at_once():
    verdict = Arrival().feed(_client_hello())
    assert isinstance(verdict, Refusal) and verdict.status == 400 and "not HTTPS" in verdict.reason


def test_https_against_a_plain_http_server_says_so_quickly(run):
    """A port that answers as the web worker does (its arrival check), the
    client pointed at it with https://."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer():
        conn, _ = listener.accept()
        with conn:
            arrival = Arrival()
            while (verdict := arrival.feed(conn.recv(65536))) is False:
                pass
            if isinstance(verdict, Refusal):
                conn.sendall(verdict.response())

    threading.Thread(target=answer, daemon=True).start()
    started = time.monotonic()
    code, _, err = run("list", url=f"https://127.0.0.1:{port}")
    took = time.monotonic() - started
    listener.close()
    line = one_line(err)
    assert code == 7 and "does not speak HTTPS" in line and f"http://127.0.0.1:{port}" in line, line
    assert took < CONNECT_TIMEOUT, "said at once, not after the connect timeout"


def test_an_audio_only_file_is_said_to_have_no_video_stream(run, served, media):
    service, _ = served
    r = service.post(
        "/api/jobs",
        data={"videos": [(open(media["audio_only"], "rb"), "song.mp4")]},
        content_type="multipart/form-data",
    )
    assert r.status_code == 415 and r.get_json()["error"].startswith("song.mp4 has no video stream"), r.get_json()
    song = Path("song.mp4")
    song.write_bytes(media["audio_only"].read_bytes())
    code, _, err = run("submit", song)
    line = err.strip().splitlines()[-1]  # after the upload's plain progress line
    assert "Traceback" not in err
    assert code == 1 and "song.mp4 has no video stream" in line and "not a readable" not in line, line


def test_download_never_replaces_a_file_unless_forced(run, finished_job):
    mine = Path("mine.zip")
    mine.write_bytes(b"my own file")
    code, _, err = run("download", finished_job, "-o", mine)
    assert code == 2 and "mine.zip already exists: pass --force" in one_line(err)
    assert mine.read_bytes() == b"my own file"

    folder = Path("here")
    folder.mkdir()
    code, out, err = run("download", finished_job, "-o", folder)
    assert code == 0, err
    saved = Path(out.strip())
    assert saved.parent == folder and saved.stat().st_size > 0
    saved.write_bytes(b"edited")
    code, _, err = run("download", finished_job, "-o", folder)  # the server's name, already there
    assert code == 2 and "already exists" in one_line(err) and saved.read_bytes() == b"edited"
    assert sorted(p.name for p in folder.iterdir()) == [saved.name], "no partial file left behind"
    code, _, err = run("download", finished_job, "-o", mine, "--force")
    assert code == 0 and mine.read_bytes()[:2] == b"PK", err
    code, _, err = run("submit", "mine.zip", "--download", folder / saved.name)
    assert code == 2 and "already exists" in one_line(err), "refused before the upload"


def test_delete_removes_a_finished_job(run, served, media):
    service, _ = served
    job_id = service.submit([media["clip"]], variations=1)["jobId"]
    service.wait(job_id)
    code, _, err = run("delete", job_id)
    assert code == 0 and "deleted" in err, err
    code, _, err = run("status", job_id)
    assert code == 6 and job_id in one_line(err)
    code, _, err = run("delete", job_id)
    assert code == 6 and "HTTP 404" in one_line(err)
