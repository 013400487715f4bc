"""Hostile input: every malformed request gets a 4xx JSON error naming the
problem and leaves nothing behind; nothing inside an upload makes ffmpeg read
anything but the uploaded file."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from itsdangerous import URLSafeTimedSerializer

from refresher import intake, lifecycle
from refresher.media import slots as probe_slots
from refresher.store import Store
from refresher.webapp import create_app

from .conftest import FFMPEG, PASSWORD, ROOT, ffmpeg_pids_writing_under, make_settings, sql
from .support.servers import processes_tagged, wait_until


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(make_settings(tmp_path_factory.mktemp("hostile") / "data", max_upload_mb=1))


@pytest.fixture(scope="module")
def headers(app):
    token = app.test_client().post("/api/auth", json={"password": PASSWORD}).get_json()["token"]
    return {"Authorization": f"Bearer {token}"}


def leftovers(app) -> list[str]:
    settings = app.extensions["refresher"].settings
    found = []
    for sub in ("jobs", "incoming"):
        folder = settings.data_dir / sub
        if folder.exists():
            found += [str(p) for p in folder.rglob("*")]
    with Store.shared(settings.database).engine.connect() as conn:
        found += [f"job row {r[0]}" for r in conn.exec_driver_sql("SELECT id FROM jobs")]
        found += [f"token row {r[0]}" for r in conn.exec_driver_sql("SELECT name FROM api_tokens")]
    return found


def multipart(parts: list[tuple[str, str | None, bytes]], boundary="XyZ") -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: video/mp4\r\n"
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def cases(media):
    clip = media["clip"].read_bytes()
    mp = "multipart/form-data; boundary=XyZ"
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")
    hls = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n"
    concat = b"ffconcat version 1.0\nfile /etc/hostname\n"
    return [
        # (id, method, url, kwargs, status, words in the error)
        ("no body", "post", "/api/jobs", {}, 415, "multipart/form-data"),
        # a JSON job is made from resumable uploads: what else it carries is named
        ("json body", "post", "/api/jobs", {"json": {"videos": []}}, 400, "unexpected field 'videos'"),
        (
            "no videos field",
            "post",
            "/api/jobs",
            {"data": multipart([("variations", None, b"3")]), "content_type": mp},
            400,
            "no files",
        ),
        (
            "videos as text",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", None, b"x")]), "content_type": mp},
            400,
            "no files",
        ),
        (
            "other file field",
            "post",
            "/api/jobs",
            {"data": multipart([("video", "a.mp4", clip)]), "content_type": mp},
            400,
            "unexpected file field",
        ),
        (
            "variations as file",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "a.mp4", clip), ("variations", "v.txt", b"3")]), "content_type": mp},
            400,
            "unexpected file field",
        ),
        (
            "eleven files",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", f"{i}.mp4", clip) for i in range(11)]), "content_type": mp},
            400,
            "too many files",
        ),
        (
            "sixty tiny files",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", f"{i}.mp4", b"x") for i in range(60)]), "content_type": mp},
            400,
            "at most 10 files",
        ),
        (
            "eleven files after many fields",
            "post",
            "/api/jobs",
            {
                "data": multipart([("note", None, b"n")] * 30 + [("videos", f"{i}.mp4", b"x") for i in range(11)]),
                "content_type": mp,
            },
            400,
            "at most 10 files",
        ),
        (
            "sixty text fields",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "a.mp4", clip)] + [("note", None, b"n")] * 60), "content_type": mp},
            400,
            "too many form fields",
        ),
        # within Werkzeug's part limit (10 files and 50 fields), so counted once the parts are read
        (
            "fifty-one text fields",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "a.mp4", clip)] + [("note", None, b"n")] * 51), "content_type": mp},
            400,
            "too many form fields: 51 sent, at most 50",
        ),
        (
            "a thousand text fields before a video",
            "post",
            "/api/jobs",
            {"data": multipart([("note", None, b"n")] * 1000 + [("videos", "a.mp4", clip)]), "content_type": mp},
            400,
            "too many form fields",
        ),
        # the eleventh file is the sixty-first part: Werkzeug's part limit meets it first
        (
            "eleven files after fifty fields",
            "post",
            "/api/jobs",
            {
                "data": multipart([("note", None, b"n")] * 50 + [("videos", f"{i}.mp4", b"x") for i in range(11)]),
                "content_type": mp,
            },
            400,
            "at most 10 files",
        ),
        (
            "text field over MAX_FORM_MEMORY_SIZE",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "a.mp4", clip), ("seed", None, b"s" * 600_000)]), "content_type": mp},
            400,
            "the text field 'seed' is larger than the limit of 500 KB",
        ),
        # each form limit names itself, never the request's (10 × MAX_UPLOAD_MB)
        (
            "a file name of a megabyte",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "a" * 1_000_000 + ".mp4", clip)]), "content_type": mp},
            400,
            "file names of at most 1024 characters",
        ),
        (
            "a file name of 2000 characters",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "a" * 2000 + ".mp4", clip)]), "content_type": mp},
            400,
            "a file name of 2004 characters was sent; file names of at most 1024",
        ),
        (
            "a text field of 600 KB first",
            "post",
            "/api/jobs",
            {"data": multipart([("name", None, b"n" * 600_000), ("videos", "a.mp4", clip)]), "content_type": mp},
            400,
            "the text field 'name' is larger than the limit of 500 KB",
        ),
        (
            "a preamble of 600 KB",
            "post",
            "/api/jobs",
            {"data": b"p" * 600_000 + b"\r\n" + multipart([("videos", "a.mp4", clip)]), "content_type": mp},
            400,
            "more than the limit of 500 KB before its first part",
        ),
        *[
            (
                f"variations {v!r}",
                "post",
                "/api/jobs",
                {"data": multipart([("videos", "a.mp4", clip), ("variations", None, v.encode())]), "content_type": mp},
                400,
                "variations",
            )
            for v in ["0", "21", "-1", "abc", "1e1", "5.0", "٣", "99999999999999999999"]
        ],
        (
            "variations twice",
            "post",
            "/api/jobs",
            {
                "data": multipart([("videos", "a.mp4", clip), ("variations", None, b"2"), ("variations", None, b"3")]),
                "content_type": mp,
            },
            400,
            "more than once",
        ),
        (
            "seed too long",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "a.mp4", clip), ("seed", None, b"s" * 129)]), "content_type": mp},
            400,
            "seed",
        ),
        (
            "seed control char",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "a.mp4", clip), ("seed", None, b"a\x00b")]), "content_type": mp},
            400,
            "seed",
        ),
        (
            "empty file",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "empty.mp4", b"")]), "content_type": mp},
            415,
            "empty.mp4",
        ),
        (
            "text as mp4",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "notes.mp4", b"hello " * 100)]), "content_type": mp},
            415,
            "notes.mp4",
        ),
        (
            "truncated mp4",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "cut.mp4", clip[:3000])]), "content_type": mp},
            415,
            "cut.mp4",
        ),
        (
            "png as mp4",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "pic.mp4", png)]), "content_type": mp},
            415,
            "pic.mp4",
        ),
        (
            "hls playlist as mp4",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "list.mp4", hls)]), "content_type": mp},
            415,
            "list.mp4",
        ),
        (
            "concat list as mov",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "list.mov", concat)]), "content_type": mp},
            415,
            "list.mov",
        ),
        (
            "audio only",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "song.mp4", media["audio_only"].read_bytes())]), "content_type": mp},
            415,
            "song.mp4",
        ),
        (
            "matroska as mp4",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "clip.mp4", media["mkv"].read_bytes())]), "content_type": mp},
            415,
            "clip.mp4",
        ),
        (
            "resolution over 8K",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "huge.mp4", media["huge"].read_bytes())]), "content_type": mp},
            415,
            "8192×4608",
        ),
        (
            "longer than MAX_DURATION_SECONDS",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "endless.mp4", media["endless"].read_bytes())]), "content_type": mp},
            400,
            "endless.mp4 is 3600 s long; the longest accepted is 300 s (MAX_DURATION_SECONDS)",
        ),
        (
            "one good one bad",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "a.mp4", clip), ("videos", "b.mp4", b"junk" * 50)]), "content_type": mp},
            415,
            "b.mp4",
        ),
        (
            "file over MAX_UPLOAD_MB",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "big.mp4", clip * 6)]), "content_type": mp},
            413,
            "big.mp4",
        ),
        (
            "request over the limit",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", f"{i}.mp4", b"\0" * 1000_000) for i in range(12)]), "content_type": mp},
            413,
            "MAX_UPLOAD_MB",
        ),
        (
            "multipart without boundary",
            "post",
            "/api/jobs",
            {"data": b"--a\r\n", "content_type": "multipart/form-data"},
            400,
            "no files",
        ),
        (
            "multipart truncated",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "a.mp4", clip)])[:5000], "content_type": mp},
            400,
            "no files",
        ),
        (
            "auth huge json",
            "post",
            "/api/auth",
            {"data": b'{"password": "' + b"a" * 2_000_000 + b'"}', "content_type": "application/json"},
            413,
            "large",
        ),
        (
            "auth malformed json",
            "post",
            "/api/auth",
            {"data": b'{"password": ', "content_type": "application/json"},
            400,
            "JSON",
        ),
        ("auth json array", "post", "/api/auth", {"json": ["pw"]}, 400, "JSON"),
        ("auth long password", "post", "/api/auth", {"json": {"password": "p" * 5000}}, 401, "wrong password"),
        ("wrong method on jobs", "put", "/api/jobs", {}, 405, "not allowed"),
        ("wrong method on auth", "put", "/api/auth", {}, 405, "not allowed"),
        ("unknown route", "get", "/api/nothing-here", {}, 404, "no such"),
        ("traversal in id", "get", "/api/jobs/..%2F..%2Fetc%2Fpasswd", {}, 404, "no"),
        ("nul in id", "get", "/api/jobs/%00", {}, 404, "no job"),
        ("very long id", "get", "/api/jobs/" + "a" * 5000, {}, 404, "no job"),
        ("limit negative", "get", "/api/jobs?limit=-1", {}, 400, "limit"),
        ("limit huge", "get", "/api/jobs?limit=99999", {}, 400, "limit"),
        ("limit superscript digit", "get", "/api/jobs?limit=%C2%B2", {}, 400, "limit"),
        ("status unknown", "get", "/api/jobs?status=<script>", {}, 400, "status"),
        ("token name too long", "post", "/api/tokens", {"json": {"name": "n" * 101}}, 400, "name"),
        ("token name not text", "post", "/api/tokens", {"json": {"name": 5}}, 400, "name"),
        ("token json array", "post", "/api/tokens", {"json": [1]}, 400, "name"),
        # a right-to-left override shows "invoice\u202egpj" as "invoicejpg"
        *[
            (
                f"token name with U+{ord(c):04X}",
                "post",
                "/api/tokens",
                {"json": {"name": f"invoice{c}gpj"}},
                400,
                "name",
            )
            for c in "\u202e\u2066\u200b\ufeff\u2028\u2029\x85\ue000\U000f0001\u0378"
        ],
        (
            "seed with bidi override",
            "post",
            "/api/jobs",
            {"data": multipart([("videos", "a.mp4", clip), ("seed", None, "a\u202eb".encode())]), "content_type": mp},
            400,
            "seed",
        ),
        ("revoke unknown token", "delete", "/api/tokens/unknown", {}, 404, "unknown"),
        (
            "huge bearer token",
            "get",
            "/api/jobs",
            {"headers": {"Authorization": "Bearer " + "x" * 10000}},
            401,
            "token",
        ),
    ]


class _NoMedia(dict):
    """Stands in for the media fixture when the case names are collected."""

    def __missing__(self, key):
        class Empty:
            def read_bytes(self):
                return b""

        return Empty()


CASE_NAMES = [case[0] for case in cases(_NoMedia())]


def test_at_least_thirty_hostile_requests():
    assert len(CASE_NAMES) >= 30 and len(set(CASE_NAMES)) == len(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_request(app, headers, media, name):
    _, method, url, kwargs, status, words = next(c for c in cases(media) if c[0] == name)
    kwargs = dict(kwargs)
    extra_headers = kwargs.pop("headers", {})
    merged = {**headers, **extra_headers}
    r = getattr(app.test_client(), method)(url, headers=merged, **kwargs)
    assert r.status_code == status, (name, r.status_code, r.get_data(as_text=True)[:300])
    body = r.get_json(silent=True)
    assert isinstance(body, dict) and isinstance(body.get("error"), str), (name, r.get_data()[:200])
    assert words.lower() in body["error"].lower(), (name, body)
    assert leftovers(app) == [], name


def test_references_inside_an_upload_are_never_followed(app, headers, tmp_path):
    """A playlist or concat list dressed as a video points at a named pipe and a
    local port: ffmpeg must open neither."""
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    opened = threading.Event()
    releasing = threading.Event()

    def watch_fifo():
        fd = os.open(fifo, os.O_WRONLY)  # returns only when somebody opens it for reading
        if not releasing.is_set():
            opened.set()
        os.close(fd)

    watcher = threading.Thread(target=watch_fifo, daemon=True)
    watcher.start()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    payloads = {
        "playlist.mp4": f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:{fifo}\n#EXTINF:1,\n"
        f"http://127.0.0.1:{port}/a.ts\n#EXT-X-ENDLIST\n".encode(),
        "concat.mov": f"ffconcat version 1.0\nfile '{fifo}'\nfile 'http://127.0.0.1:{port}/b.mp4'\n".encode(),
        "sdp.mp4": (
            f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video {port} RTP/AVP 96\n"
        ).encode(),
    }
    client = app.test_client()
    for name, data in payloads.items():
        r = client.post(
            "/api/jobs",
            headers=headers,
            content_type="multipart/form-data",
            data={"videos": [(io.BytesIO(data), name)]},
        )
        assert r.status_code == 415 and name in r.get_json()["error"]
    assert not opened.is_set(), "ffmpeg opened the file named inside the upload"
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected to the port named inside the upload
    releasing.set()
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    watcher.join(2)
    listener.close()
    assert leftovers(app) == []


def _send_until_answered(url: str, token: str, head: bytes, chunk: bytes, total: int, chunked: bool):
    """Stream an upload over a raw socket; stop as soon as the server answers.
    Returns (bytes of body sent, the status line, the response body)."""
    import select
    from urllib.parse import urlparse

    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port))
    headers = (
        f"POST /api/jobs HTTP/1.1\r\nHost: {parsed.netloc}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary=XyZ\r\n"
    )
    headers += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    sock.sendall(headers.encode())
    sent = 0

    def send(data: bytes):
        sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)

    send(head)
    sent += len(head)
    try:
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break
            send(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.settimeout(10)
    response = b""
    try:
        while b"\r\n\r\n" not in response or len(response) < response.index(b"\r\n\r\n") + 10:
            data = sock.recv(65536)
            if not data:
                break
            response += data
    except (TimeoutError, ConnectionResetError):
        pass
    sock.close()
    status, _, rest = response.partition(b"\r\n")
    return sent, status.decode(), rest.split(b"\r\n\r\n", 1)[-1]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_oversized_upload_is_refused_without_reading_the_rest(gunicorn_server, chunked):
    """413 comes from the first megabytes past MAX_UPLOAD_MB (or at once, when the
    declared length is over the request limit), not after 200 MB."""
    server = gunicorn_server(MAX_UPLOAD_MB=1)
    token = server.session.headers["Authorization"].split()[1]
    head = b'--XyZ\r\nContent-Disposition: form-data; name="videos"; filename="big.mp4"\r\n\r\n'
    total = 200 * 1024 * 1024
    sent, status, body = _send_until_answered(server.url, token, head, b"\0" * 65536, total, chunked)
    assert " 413 " in status, (status, body[:200])
    assert sent < 20 * 1024 * 1024, f"{sent} bytes were read before the answer"
    assert b"big.mp4" in body or b"MAX_UPLOAD_MB" in body
    incoming = server.data_dir / "incoming"
    assert not incoming.exists() or not any(incoming.iterdir()), "the partial upload is removed"


def test_endless_text_fields_are_refused_without_reading_the_rest(gunicorn_server):
    """Werkzeug's part limit stays on for the upload: a form of tiny fields
    without end is answered 400 at its sixty-first part, not after 200 MB."""
    server = gunicorn_server()
    token = server.session.headers["Authorization"].split()[1]
    field = b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nn\r\n'
    sent, status, body = _send_until_answered(
        server.url, token, field * 100, field * 1000, 200 * 1024 * 1024, chunked=False
    )
    assert " 400 " in status, (status, body[:200])
    assert sent < 20 * 1024 * 1024, f"{sent} bytes were read before the answer"
    assert b"too many form fields" in body


def test_a_chunked_body_past_the_request_limit_is_413(gunicorn_server):
    """A chunked body declares no length: cut off as it is read, at ten files
    of MAX_UPLOAD_MB and 1 MB more, and answered as too large (not as a form
    over its limits)."""
    server = gunicorn_server(MAX_UPLOAD_MB=1)
    token = server.session.headers["Authorization"].split()[1]
    head = b"".join(
        b'--XyZ\r\nContent-Disposition: form-data; name="videos"; filename="%d.mp4"\r\n\r\n' % i
        + b"\0" * 1000_000
        + b"\r\n"
        for i in range(10)
    )
    field = b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\n' + b"n" * 400_000 + b"\r\n"
    sent, status, body = _send_until_answered(server.url, token, head, field, 200 * 1024 * 1024, chunked=True)
    assert " 413 " in status, (status, body[:200])
    assert b"MAX_UPLOAD_MB" in body
    assert sent < 20 * 1024 * 1024, f"{sent} bytes were read before the answer"
    incoming = server.data_dir / "incoming"
    assert not incoming.exists() or not any(incoming.iterdir()), "the partial upload is removed"


@pytest.fixture
def small_disk(tmp_path):
    """A file system of 32 MB of its own (a tmpfs), to fill up."""
    path = tmp_path / "small-disk"
    path.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if r.returncode != 0:
        pytest.skip(f"no tmpfs can be mounted here: {r.stderr.strip()}")
    yield path
    subprocess.run(["umount", "--lazy", str(path)], capture_output=True, stdin=subprocess.DEVNULL)


def test_a_disk_that_fills_during_an_upload_is_507_and_the_service_carries_on(small_disk, gunicorn_server, media):
    server = gunicorn_server(DATA_DIR=small_disk / "data")
    token = server.session.headers["Authorization"].split()[1]
    head = b'--XyZ\r\nContent-Disposition: form-data; name="videos"; filename="big.mp4"\r\n\r\n'
    total = shutil.disk_usage(small_disk).free + 8 * 1024 * 1024
    sent, status, body = _send_until_answered(server.url, token, head, b"\0" * 65536, total, chunked=False)
    assert " 507 " in status, (status, body[:200])
    assert b"disk is full" in body
    incoming = server.data_dir / "incoming"
    assert not incoming.exists() or not any(incoming.iterdir()), "the partial upload is removed"
    # its space is free again: the next upload is taken
    r = server.session.post(
        server.url + "/api/jobs", files={"videos": ("clip.mp4", media["clip"].read_bytes())}, data={"variations": "1"}
    )
    assert r.status_code == 202, r.text
    server.session.post(f"{server.url}/api/jobs/{r.json()['jobId']}/cancel")


def test_no_redirect_is_built_from_the_host_header(app):
    """werkzeug answers "/api//jobs", a missing trailing slash and an empty
    path with a redirect to an absolute URL made from the Host header, which
    the client chose. Every route, with doubled slashes and with and without
    a trailing slash, answers without one."""
    client = app.test_client()
    paths = {("GET", "")}  # what a server makes of "GET http://host HTTP/1.1"
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<[^>]+>", "x", rule.rule)
        for variant in (
            path,
            path + "/",
            path.rstrip("/"),
            path.replace("/", "//"),
            "/" + path[1:].replace("/", "//"),
            path + "//",
        ):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                paths.add((method, variant))
    assert ("GET", "/api//jobs") in paths
    for method, path in sorted(paths):
        # PATH_INFO exactly as a server passes it ("//x" is no host name here)
        r = client.open("/", method=method, headers={"Host": "evil.example"}, environ_overrides={"PATH_INFO": path})
        location = r.headers.get("Location", "/")
        assert location.startswith("/") and not location.startswith("//"), (method, path, r.status_code, location)
    r = client.get("/api//jobs", headers={"Host": "evil.example"})
    assert r.status_code == 404 and "error" in r.get_json()


def test_cors_is_off_by_default(app):
    r = app.test_client().options(
        "/api/jobs", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_allows_only_the_configured_origins(tmp_path):
    app = create_app(make_settings(tmp_path / "data", cors_origins=("https://ads.example.com",)))
    client = app.test_client()
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "Authorization"}
    ok = client.options("/api/jobs", headers={"Origin": "https://ads.example.com", **preflight})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://ads.example.com"
    assert "authorization" in ok.headers["Access-Control-Allow-Headers"].lower()
    other = client.options("/api/jobs", headers={"Origin": "https://evil.example", **preflight})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_login_throttle_is_shared_by_every_worker(gunicorn_server):
    import requests

    server = gunicorn_server(WEB_CONCURRENCY=3)
    codes = [requests.post(server.url + "/api/auth", json={"password": "wrong"}).status_code for _ in range(10)]
    assert codes == [401] * 10, codes
    # Every later attempt is refused, whichever worker the new connection reaches.
    for _ in range(200):
        r = requests.post(server.url + "/api/auth", json={"password": "wrong"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        refusing = set(re.findall(r'"POST /api/auth HTTP/1.1" 429 .* pid=<?(\d+)', server.log_text()))
        if len(refusing) >= 2:
            break
    assert len(refusing) >= 2, "several workers refused, so they share the count"


def test_throttle_uses_the_forwarded_address_behind_a_trusted_proxy(tmp_path):
    app = create_app(make_settings(tmp_path / "data", trust_proxy_hops=1))
    client = app.test_client()
    for _ in range(10):
        client.post("/api/auth", json={"password": "wrong"}, headers={"X-Forwarded-For": "203.0.113.7"})
    blocked = client.post("/api/auth", json={"password": "wrong"}, headers={"X-Forwarded-For": "203.0.113.7"})
    other = client.post("/api/auth", json={"password": "wrong"}, headers={"X-Forwarded-For": "198.51.100.2"})
    assert (blocked.status_code, other.status_code) == (429, 401)


def test_no_secret_reaches_the_log(gunicorn_server, media):
    import requests

    server = gunicorn_server()
    token = server.session.headers["Authorization"].split()[1]
    api = requests.post(
        server.url + "/api/tokens", json={"name": "ci"}, headers={"Authorization": f"Bearer {token}"}
    ).json()["token"]
    requests.get(server.url + "/api/jobs", headers={"Authorization": f"Bearer {api}"})
    requests.post(server.url + "/api/auth", json={"password": "not-the-password"})
    log = server.log_text()
    for secret in (token, api, PASSWORD, "not-the-password", "test-secret"):
        assert secret not in log


def test_a_full_queue_is_refused_with_503(make_service, media, database_url):
    svc = make_service(encode_workers=1, max_queued_jobs=2, database_url=database_url)
    first = svc.submit([media["slow"]], variations=1)["jobId"]
    second = svc.submit([media["clip"]], variations=1)["jobId"]
    r = svc.post(
        "/api/jobs", data={"videos": [(open(media["clip"], "rb"), "third.mp4")]}, content_type="multipart/form-data"
    )
    assert r.status_code == 503 and "queue is full" in r.get_json()["error"]
    assert int(r.headers["Retry-After"]) > 0
    assert len(svc.get("/api/jobs").get_json()) == 2, "the refused upload left no job"
    for job_id in (second, first):
        svc.post(f"/api/jobs/{job_id}/cancel")


def test_a_frame_over_8k_early_in_the_video_is_refused_or_fails_the_job(make_service, frame_over_8k):
    """The stream says 160×120; its fourth frame is 7700×4400. The probe's
    decoder refuses that picture if it gets that far before the probe has its
    first frame (ffmpeg's decoder and muxer run in threads of their own, so
    that depends on the machine's load), and the upload is refused; otherwise
    the encode meets it and the job fails. Either way with the reason, and no
    decoder allocates the picture."""
    svc = make_service()
    r = svc.post(
        "/api/jobs",
        content_type="multipart/form-data",
        data={"videos": [(open(frame_over_8k["early"], "rb"), "early.mov")], "variations": "1"},
    )
    if r.status_code == 415:
        assert r.get_json()["error"] == "early.mov is 7700×4400; videos up to 8K (7680×4320) are accepted"
        assert leftovers(svc.app) == []
        return
    assert r.status_code == 202, r.get_json()
    job = svc.wait(r.get_json()["jobId"])
    assert job["status"] == "failed", job
    assert job["error"] == "the video has a 7700×4400 frame; videos up to 8K (7680×4320) are accepted", job


def test_a_frame_over_8k_later_in_the_video_fails_the_job(make_service, frame_over_8k):
    """Past what the probe reads, the encoding ffmpeg's decoder refuses the
    picture; the variation stops and fails with the reason, never with an
    output that silently lacks a frame."""
    svc = make_service()
    job = svc.wait(svc.submit([frame_over_8k["late"]], variations=1)["jobId"])
    assert job["status"] == "failed", job
    assert job["error"] == "the video has a 7700×4400 frame; videos up to 8K (7680×4320) are accepted", job
    assert job["files"][0]["outputs"] == []


def _flock_waiters(paths) -> list[int]:
    """Pids blocked in flock(2) on any of `paths` (from /proc/locks)."""
    inodes = {os.stat(p).st_ino for p in paths}
    pids = []
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if "->" in fields and fields[1] == "->" and int(fields[6].rsplit(":", 1)[1]) in inodes:
                pids.append(int(fields[5]))
    return pids


def test_probes_wait_for_a_slot_of_the_host(gunicorn_server, media):
    """Every web worker of a host shares the same few probe slots: with all of
    them taken, uploads to any worker wait for one before any ffmpeg starts."""
    import fcntl

    import requests

    from refresher.media.slots import ProbeSlots

    server = gunicorn_server(WEB_CONCURRENCY=2)
    slots = ProbeSlots(server.data_dir / "run")
    held = [os.open(path, os.O_RDWR | os.O_CREAT, 0o600) for path in slots.paths]
    for fd in held:
        fcntl.flock(fd, fcntl.LOCK_EX)
    answers = []
    # A client of its own each (a client's further probes wait on its own
    # lock), and no two of them on one of the CLIENT_LOCKS files: four
    # random sessions share one in about one run in eleven, and that one's
    # upload would wait on its client's lock instead of a slot.
    tokens: dict[Path, str] = {}
    while len(tokens) < 4:
        token = requests.post(server.url + "/api/auth", json={"password": PASSWORD}).json()["token"]
        session = URLSafeTimedSerializer("not needed to read it").loads_unsafe(token)[1]["i"]
        tokens.setdefault(slots.client_path(f"session:{session}"), token)
    clients = iter(tokens.values())

    def upload(token: str):
        with open(media["clip"], "rb") as f:
            answers.append(
                requests.post(
                    server.url + "/api/jobs",
                    files={"videos": ("clip.mp4", f)},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=60,
                ).status_code
            )

    senders = [threading.Thread(target=upload, args=(next(clients),)) for _ in range(4)]
    try:
        for sender in senders:
            sender.start()
        waiting = wait_until(lambda: len(w := _flock_waiters(slots.paths)) == 4 and w, timeout=30)
        assert set(waiting) <= set(processes_tagged(server.tag)), "the server's own workers wait"
        assert ffmpeg_pids_writing_under(server.data_dir) == [], "no probe runs while every slot is taken"
        assert answers == []
    finally:
        for fd in held:
            os.close(fd)
        for sender in senders:
            sender.join(60)
    assert answers == [202] * 4


def test_the_queue_cap_holds_for_a_burst_of_uploads_on_every_web_worker(gunicorn_server, media, database_url):
    """Ten uploads at once, spread over three web workers, with room for
    two: exactly two jobs are accepted, whatever the engine."""
    import concurrent.futures

    import requests

    env = {"DATABASE_URL": database_url} if database_url else {}
    # no encode workers: the accepted jobs stay queued, so the cap stays reached
    server = gunicorn_server(WEB_CONCURRENCY=3, ENCODE_WORKERS=0, MAX_QUEUED_JOBS=2, **env)
    clip = media["clip"].read_bytes()
    start = threading.Barrier(10)

    def upload(i: int) -> int:
        start.wait()
        return requests.post(
            server.url + "/api/jobs",
            headers=dict(server.session.headers),
            timeout=60,
            files=[("videos", (f"burst{i}.mp4", clip, "video/mp4"))],
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = sorted(pool.map(upload, range(10)))
    assert codes == [202] * 2 + [503] * 8, codes
    assert len(server.session.get(server.url + "/api/jobs").json()) == 2


def _fill(path) -> None:
    """Fill the file system `path` is on until it takes no more."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 4096):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def test_on_a_full_disk_sign_out_tokens_and_delete_work_and_other_writes_are_507(small_disk, media):
    """The disk that holds the database fills up: a sign-out, a revoked or new
    token, a cancel and a deleted job still work (through the reserve the
    service keeps beside the database, given back now), a token keeps
    working, other writes answer 507, and the reserve is made again once
    the disk has room."""
    disk = small_disk  # 32 MB of its own
    app = create_app(make_settings(disk / "data"))
    client = app.test_client()
    store = app.extensions["refresher"].store
    reserve = disk / "data" / "refresher.db-reserve"  # beside the database

    def signed_in() -> dict:
        return {"Authorization": f"Bearer {client.post('/api/auth', json={'password': PASSWORD}).get_json()['token']}"}

    mine, leaving, everyone = signed_in(), signed_in(), signed_in()
    api = client.post("/api/tokens", json={"name": "ci"}, headers=mine).get_json()
    revoked = client.post("/api/tokens", json={"name": "old"}, headers=mine).get_json()

    def upload() -> str:
        r = client.post(
            "/api/jobs",
            headers=mine,
            data={"videos": [(open(media["clip"], "rb"), "clip.mp4")], "variations": "1"},
            content_type="multipart/form-data",
        )
        assert r.status_code == 202, r.get_json()
        return r.get_json()["jobId"]

    finished, queued = upload(), upload()  # no supervisor here: both stay queued
    sql(store, "UPDATE jobs SET status = 'completed', finished_at = ? WHERE id = ?", time.time(), finished)
    sql(store, "UPDATE variations SET status = 'completed' WHERE job_id = ?", finished)
    _fill(disk / "filler")

    r = client.post(f"/api/jobs/{finished}/rerun", headers=mine)
    assert r.status_code == 507 and "disk is full" in r.get_json()["error"], r.get_json()
    assert reserve.stat().st_size > 0, "kept from the start; an ordinary write does not take it"
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {api['token']}"}).status_code == 200
    assert client.delete("/api/auth", headers=leaving).status_code == 204
    assert client.get("/api/jobs", headers=leaving).status_code == 401, "signed out at once"
    assert not reserve.exists(), "given back"
    assert client.delete(f"/api/tokens/{revoked['id']}", headers=mine).status_code == 204
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {revoked['token']}"}).status_code == 401
    assert client.post("/api/tokens", json={"name": "new"}, headers=mine).status_code == 201
    assert client.post(f"/api/jobs/{queued}/cancel", headers=mine).get_json()["status"] == "cancelled"
    assert client.delete(f"/api/jobs/{finished}", headers=mine).status_code == 204
    assert client.get(f"/api/jobs/{finished}", headers=mine).status_code == 404
    assert not (disk / "data" / "jobs" / finished).exists()
    assert client.delete("/api/auth?all=1", headers=everyone).status_code == 204
    assert client.get("/api/jobs", headers=mine).status_code == 401

    (disk / "filler").unlink()
    lifecycle.run_cleanup(store, app.extensions["refresher"].settings)
    assert reserve.stat().st_size > 0, "made again once the disk has room"


@pytest.fixture
def slow_to_probe(tmp_path, media, monkeypatch):
    """An app whose ffmpeg reads media["clip2"] only once the hold file is
    gone (tests/fakes/slow_probe_ffmpeg.py): (app, hold file, file of the
    pids of those reads)."""
    hold, started = tmp_path / "hold", tmp_path / "started"
    hold.touch()
    started.touch()
    monkeypatch.setenv("REAL_FFMPEG", FFMPEG)
    monkeypatch.setenv("SLOW_INPUT_SIZE", str(media["clip2"].stat().st_size))
    monkeypatch.setenv("HOLD_FILE", str(hold))
    monkeypatch.setenv("STARTED_FILE", str(started))
    fake = str(ROOT / "tests" / "fakes" / "slow_probe_ffmpeg.py")
    yield create_app(make_settings(tmp_path / "data", ffmpeg_binary=fake)), hold, started
    hold.unlink(missing_ok=True)


def _signed_in(app) -> dict:
    token = app.test_client().post("/api/auth", json={"password": PASSWORD}).get_json()["token"]
    return {"Authorization": f"Bearer {token}"}


def _upload(app, headers, paths, answers: list) -> None:
    r = app.test_client().post(
        "/api/jobs",
        headers=headers,
        data={"videos": [(open(p, "rb"), p.name) for p in paths], "variations": "1"},
        content_type="multipart/form-data",
    )
    answers.append((r.status_code, r.get_json()))


def test_one_client_holding_probe_slots_does_not_delay_another(slow_to_probe, media, monkeypatch):
    """Two requests of three slow-to-probe files from one client, then a small
    upload from another: the first client holds one probe slot at most, and
    the other's upload is answered while the first's still wait. (Clients
    are spread over 64 lock files, and two on one file share its cap: with
    that many files here, the two clients of this test never share one,
    where one run in 64 did.)"""
    monkeypatch.setattr(probe_slots, "CLIENT_LOCKS", 1 << 30)
    app, hold, started = slow_to_probe
    slow_client, other = _signed_in(app), _signed_in(app)
    slow_answers: list = []
    senders = [
        threading.Thread(target=_upload, args=(app, slow_client, [media["clip2"]] * 3, slow_answers)) for _ in range(2)
    ]
    for sender in senders:
        sender.start()
    try:
        wait_until(lambda: started.read_text(), timeout=30)  # the slow client holds a slot
        small: list = []
        quick = threading.Thread(target=_upload, args=(app, other, [media["clip"]], small))
        quick.start()
        quick.join(30)
        assert small and small[0][0] == 202, small
        assert slow_answers == [], "the slow client's requests still wait"
        assert len(started.read_text().split()) == 1, "the slow client held one slot, never both"
    finally:
        hold.unlink()
        for sender in senders:
            sender.join(60)
    assert [code for code, _ in slow_answers] == [202, 202], slow_answers


def test_a_probe_past_its_time_is_stopped_and_the_file_refused(slow_to_probe, media, monkeypatch):
    app, _hold, started = slow_to_probe
    monkeypatch.setattr(intake, "PROBE_SECONDS", 1)
    answers: list = []
    _upload(app, _signed_in(app), [media["clip"], media["clip2"]], answers)
    [(code, body)] = answers
    assert code == 415, body
    assert body["error"] == "second clip.mp4 took longer than 1 s to read, the most a file may take; it was stopped"
    assert body["file"] == "second clip.mp4"
    [pid] = started.read_text().split()
    assert not os.path.exists(f"/proc/{pid}"), "the probe was killed"
    assert leftovers(app) == []
