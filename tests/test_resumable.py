"""Resumable uploads over the tus 1.0 protocol (/api/uploads): the protocol's
answers in-process, and over real HTTP a standard tus client (tuspy), a
PATCH cut half-way and resumed after the web process restarted, each
upload making a job that completes."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError
from werkzeug.exceptions import ClientDisconnected

from refresher import lifecycle
from refresher.storage import for_settings
from refresher.storage.receiving import PART_BYTES, BucketReceiver
from refresher.store import QueueFull, Store, UploadClaimed
from refresher.webapp import create_app

from .conftest import FFMPEG, GunicornServer, make_settings, sql
from .support.servers import wait_until
from .support.api import login
from .support.servers import wait_done

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def metadata(name: str) -> str:
    return "filename " + base64.b64encode(name.encode()).decode()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(make_settings(tmp_path_factory.mktemp("resumable") / "data", max_upload_mb=2))


@pytest.fixture(scope="module")
def headers(app):
    return {**login(app.test_client()), **TUS}


@pytest.fixture
def client(app):
    return app.test_client()


def begin(client, headers, length: int, name: str = "ad.mp4") -> str:
    r = client.post(
        "/api/uploads", headers={**headers, "Upload-Length": str(length), "Upload-Metadata": metadata(name)}
    )
    assert r.status_code == 201, r.get_json()
    assert r.headers["Tus-Resumable"] == "1.0.0"
    return r.headers["Location"]


def patch(client, headers, location: str, offset: int, data: bytes):
    return client.patch(location, headers={**headers, "Upload-Offset": str(offset), "Content-Type": OCTETS}, data=data)


def upload(client, headers, path: Path, name: str | None = None) -> str:
    data = path.read_bytes()
    location = begin(client, headers, len(data), name or path.name)
    r = patch(client, headers, location, 0, data)
    assert r.status_code == 204, r.get_json()
    return location.rsplit("/", 1)[1]


def data_dir(app) -> Path:
    return app.extensions["refresher"].settings.data_dir


# --- the protocol, in-process ------------------------------------------------------------------


def test_options_is_open_and_says_what_the_server_speaks(client):
    r = client.options("/api/uploads")
    assert r.status_code == 204
    assert r.headers["Tus-Version"] == "1.0.0"
    assert r.headers["Tus-Resumable"] == "1.0.0"
    assert set(r.headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
    }
    assert r.headers["Tus-Max-Size"] == str(2 * 1024 * 1024)


def test_every_other_method_needs_a_token(client):
    for method, url in [("post", "/api/uploads"), ("head", "/api/uploads/x"), ("patch", "/api/uploads/x")]:
        r = getattr(client, method)(url, headers={**TUS, "Upload-Length": "10", "Upload-Offset": "0"})
        assert r.status_code == 401, (method, url)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.delete("/api/uploads/x", headers=TUS).status_code == 401


def test_without_the_protocol_version_the_answer_is_412(client, headers):
    r = client.post("/api/uploads", headers={"Authorization": headers["Authorization"], "Upload-Length": "10"})
    assert r.status_code == 412
    assert r.headers["Tus-Version"] == "1.0.0"
    assert "Tus-Resumable" in r.get_json()["error"]


def test_creation_refuses_what_cannot_be_taken(client, headers):
    for length, status, words in [
        (None, 400, "Upload-Length is required"),
        ("ten", 400, "whole number"),
        (str(2 * 1024 * 1024 + 1), 413, "MAX_UPLOAD_MB"),
    ]:
        sent = {**headers} if length is None else {**headers, "Upload-Length": length}
        r = client.post("/api/uploads", headers=sent)
        assert r.status_code == status and words in r.get_json()["error"], (length, r.get_json())
    r = client.post("/api/uploads", headers={**headers, "Upload-Length": "10", "Upload-Metadata": "filename ***"})
    assert r.status_code == 400 and "base64" in r.get_json()["error"]


def test_offsets_head_and_bytes_beyond_the_length(client, headers, media):
    data = media["clip"].read_bytes()
    location = begin(client, headers, len(data), name="../../etc/passwd")
    r = client.head(location, headers=headers)
    assert r.status_code == 200
    assert (r.headers["Upload-Offset"], r.headers["Upload-Length"]) == ("0", str(len(data)))
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Upload-Metadata"] == metadata("../../etc/passwd")
    assert "GMT" in r.headers["Upload-Expires"]
    r = patch(client, headers, location, 0, data[:1000])
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "1000"
    r = patch(client, headers, location, 0, data[:1000])  # the offset it had
    assert r.status_code == 409 and "at byte 1000, not 0" in r.get_json()["error"]
    r = patch(client, headers, location, 1000, data[1000:] + b"x")  # one byte too many
    assert r.status_code == 413 and "beyond Upload-Length" in r.get_json()["error"]
    assert client.head(location, headers=headers).headers["Upload-Offset"] == "1000"
    r = client.patch(location, headers={**headers, "Upload-Offset": "1000"}, data=b"x")
    assert r.status_code == 415
    upload_id = location.rsplit("/", 1)[1]
    # the client's name is only shown: the bytes live under the upload's id
    assert (data_dir(client.application) / "uploads" / upload_id / "data").stat().st_size == 1000
    r = client.post("/api/jobs", headers=headers, json={"uploads": [upload_id]})
    assert r.status_code == 409
    assert upload_id in r.get_json()["error"] and "1000 of" in r.get_json()["error"]


def test_creation_with_upload_takes_the_first_bytes_along(client, headers, media):
    data = media["clip"].read_bytes()
    r = client.post(
        "/api/uploads",
        headers={**headers, "Upload-Length": str(len(data)), "Content-Type": OCTETS},
        data=data[:5000],
    )
    assert r.status_code == 201 and r.headers["Upload-Offset"] == "5000"
    assert client.head(r.headers["Location"], headers=headers).headers["Upload-Offset"] == "5000"


def test_delete_removes_the_upload_and_its_bytes(client, headers):
    location = begin(client, headers, 100)
    assert patch(client, headers, location, 0, b"x" * 50).status_code == 204
    folder = data_dir(client.application) / "uploads" / location.rsplit("/", 1)[1]
    assert folder.is_dir()
    assert client.delete(location, headers=headers).status_code == 204
    assert not folder.exists()
    assert client.head(location, headers=headers).status_code == 404
    assert patch(client, headers, location, 50, b"x").status_code == 404


def test_a_job_takes_only_complete_videos_and_each_upload_once(client, headers, media):
    text = upload(client, headers, media["not_video"], name="notes.txt")
    r = client.post("/api/jobs", headers=headers, json={"uploads": [text]})
    assert r.status_code == 415
    assert "notes.txt" in r.get_json()["error"] and r.get_json()["file"] == "notes.txt"
    # a refused upload keeps no bytes
    assert not (data_dir(client.application) / "uploads" / text).exists()
    r = client.post("/api/jobs", headers=headers, json={"uploads": ["nosuchupload"]})
    assert r.status_code == 404 and "nosuchupload" in r.get_json()["error"]
    for body, words in [
        ({"uploads": []}, "no uploads"),
        ({"uploads": "abc"}, "list of upload ids"),
        ({"uploads": ["a"], "colour": "red"}, "unexpected field"),
        ({"uploads": ["a", "a"]}, "twice"),
    ]:
        r = client.post("/api/jobs", headers=headers, json=body)
        assert r.status_code == 400 and words in r.get_json()["error"], body
    clip = upload(client, headers, media["clip"])
    r = client.post("/api/jobs", headers=headers, json={"uploads": [clip], "variations": 50})
    assert r.status_code == 400 and "variations" in r.get_json()["error"]
    # a webhook needs WEBHOOK_SECRET, as on the form; the refusal leaves the upload to a next try
    r = client.post("/api/jobs", headers=headers, json={"uploads": [clip], "webhookUrl": "https://example.com/hook"})
    assert r.status_code == 400 and "WEBHOOK_SECRET" in r.get_json()["error"]
    r = client.post("/api/jobs", headers=headers, json={"uploads": [clip], "variations": 2, "name": "Spring"})
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert r.headers["Location"] == f"/api/jobs/{job['jobId']}"
    assert (job["name"], job["totalVariations"], job["files"][0]["name"]) == ("Spring", 2, "clip.mp4")
    # the job holds the source; the upload's bytes are gone, the upload made its one job
    sources = list((data_dir(client.application) / "jobs" / job["jobId"]).glob("source_*"))
    assert [p.read_bytes() for p in sources] == [media["clip"].read_bytes()]
    assert (data_dir(client.application) / "jobs" / job["jobId"] / "thumbnail.webp").is_file()
    assert not (data_dir(client.application) / "uploads" / clip).exists()
    r = client.post("/api/jobs", headers=headers, json={"uploads": [clip]})
    assert r.status_code == 409 and job["jobId"] in r.get_json()["error"]
    assert client.head(f"/api/uploads/{clip}", headers=headers).status_code == 410


def test_unfinished_uploads_count_toward_the_limit_and_expire(client, headers):
    settings = client.application.extensions["refresher"].settings
    storage = for_settings(settings)
    store = client.application.extensions["refresher"].store
    before = storage.used_bytes()
    location = begin(client, headers, 300_000)
    upload_id = location.rsplit("/", 1)[1]
    assert patch(client, headers, location, 0, b"x" * 200_000).status_code == 204
    assert storage.used_bytes() == before + 200_000
    # not yet expired: kept
    assert upload_id not in lifecycle.expire_uploads(store, settings, storage=storage)
    later = time.time() + settings.upload_ttl_seconds + 1
    assert upload_id in lifecycle.expire_uploads(store, settings, now=later, storage=storage)
    assert not (settings.data_dir / "uploads" / upload_id).exists()
    assert sql(store, "SELECT COUNT(*) FROM uploads WHERE id = ?", upload_id) == [(0,)]
    assert storage.used_bytes() <= before  # (other tests' unfinished uploads expired too)


def test_the_sweep_removes_bytes_no_row_owns(client, headers):
    settings = client.application.extensions["refresher"].settings
    store = client.application.extensions["refresher"].store
    stray = settings.data_dir / "uploads" / "strayupload1"
    stray.mkdir(parents=True)
    (stray / "data").write_bytes(b"x" * 10)
    kept = begin(client, headers, 100).rsplit("/", 1)[1]
    removed = lifecycle.sweep_temporaries(store, settings, min_age=0)
    assert "uploads/strayupload1/" in removed
    assert not stray.exists() and (settings.data_dir / "uploads" / kept).is_dir()


# --- over real HTTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One gunicorn (web workers and the supervisor) for the module's HTTP tests."""
    started = GunicornServer(tmp_path_factory.mktemp("resumable-http") / "data", ENCODE_WORKERS=1, WEB_CONCURRENCY=1)
    started.start()
    started.session.headers.update(TUS)
    yield started
    started.stop()
    started.kill_leftovers()


def make_job(server, upload_ids: list[str], variations: int = 1) -> dict:
    r = server.session.post(f"{server.url}/api/jobs", json={"uploads": upload_ids, "variations": variations})
    assert r.status_code == 202, r.text
    return r.json()


@pytest.mark.e2e
def test_tuspy_uploads_in_chunks_and_the_job_completes(server, media):
    from tusclient import client as tus

    uploads = tus.TusClient(
        f"{server.url}/api/uploads", headers={"Authorization": server.session.headers["Authorization"]}
    )
    uploader = uploads.uploader(str(media["clip"]), chunk_size=64 * 1024, metadata={"filename": "clip.mp4"})
    uploader.upload()
    assert uploader.offset == media["clip"].stat().st_size
    job = make_job(server, [uploader.url.rsplit("/", 1)[1]])
    assert job["files"][0]["name"] == "clip.mp4"
    assert wait_done(server, job["jobId"])["status"] == "completed"


def _cut_patch(server, location: str, data: bytes) -> None:
    """A PATCH that promises all of `data` and stops after half of it."""
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {server.session.headers['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: {OCTETS}\r\nUpload-Offset: 0\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(head + data[: len(data) // 2])
        time.sleep(0.2)  # let it be read, then the connection drops


def _web_workers(server) -> list[int]:
    """The pids of the web workers (the master's other child is the supervisor)."""
    found = []
    for pid in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split():
        try:
            if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except FileNotFoundError:
            continue
    return found


def _restart_web_worker(server) -> None:
    """The web process stops (as at a deploy) and gunicorn starts another."""
    (old,) = _web_workers(server)
    os.kill(old, signal.SIGTERM)
    wait_until(lambda: _web_workers(server) not in ([], [old]))
    wait_until(lambda: requests.get(f"{server.url}/api/health", timeout=5).status_code == 200)


@pytest.mark.e2e
def test_a_cut_patch_resumes_after_a_restart_of_the_web_process(server, media):
    data = media["clip"].read_bytes()
    r = server.session.post(
        f"{server.url}/api/uploads", headers={"Upload-Length": str(len(data)), "Upload-Metadata": metadata("cut.mp4")}
    )
    location = r.headers["Location"]
    _cut_patch(server, location, data)
    _restart_web_worker(server)
    r = server.session.head(server.url + location)
    offset = int(r.headers["Upload-Offset"])
    assert offset == len(data) // 2, r.headers
    patched = {"Content-Type": OCTETS}
    r = server.session.patch(server.url + location, headers={**patched, "Upload-Offset": "0"}, data=data[:100])
    assert r.status_code == 409
    r = server.session.patch(
        server.url + location, headers={**patched, "Upload-Offset": str(offset)}, data=data[offset:]
    )
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data))
    job = make_job(server, [location.rsplit("/", 1)[1]])
    finished = wait_done(server, job["jobId"])
    assert finished["status"] == "completed", finished
    assert json.loads(requests.get(f"{server.url}/api/health", timeout=5).text)["status"] == "ok"


# --- in object storage (STORAGE_URL), against moto's S3 server -----------------------------------

PREFIX = "team/videos"


@pytest.fixture(scope="module")
def grainy(tmp_path_factory) -> Path:
    """A 2 s clip of 8 MB (noise, losslessly coded): more than one 5 MB part."""
    path = tmp_path_factory.mktemp("grainy") / "grainy.mp4"
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:duration=2",
         "-vf", "noise=alls=100:allf=t", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(path)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return path


class _BreaksOff(io.RawIOBase):
    """A request body whose client goes away after `after` bytes."""

    def __init__(self, data: bytes, after: int):
        self.data, self.after, self.at = data, after, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.at

    def seek(self, offset: int, whence: int = 0) -> int:  # (the test client measures the body's length)
        self.at = offset + (len(self.data) if whence == 2 else self.at if whence == 1 else 0)
        return self.at

    def readinto(self, buffer) -> int:
        if self.at >= self.after:
            raise ClientDisconnected()
        piece = self.data[self.at : min(self.after, self.at + len(buffer))]
        buffer[: len(piece)] = piece
        self.at += len(piece)
        return len(piece)


def bucket_uploads(s3, bucket) -> tuple[list[str], list[str]]:
    """The keys under the service's uploads/, and the multipart uploads not finished."""
    unfinished = s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return s3.keys(bucket, f"{PREFIX}/uploads/"), [u["Key"] for u in unfinished]


@pytest.mark.e2e
def test_two_web_processes_take_alternate_patches_into_the_bucket(make_service, s3, bucket, grainy, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = make_service(storage_url=f"s3://{bucket}/{PREFIX}", database_url=url, encode_workers=1)
    second = create_app(make_settings(tmp_path / "second", storage_url=f"s3://{bucket}/{PREFIX}", database_url=url))
    web = [first.client, second.test_client()]
    headers = {**first.headers, **TUS}
    data = grainy.read_bytes()
    location = begin(web[0], headers, len(data), "grainy.mp4")
    # a PATCH that breaks off after 1 MB of the 4 MB it promised: the MB is kept (as the tail)
    r = web[1].patch(
        location,
        headers={**headers, "Upload-Offset": "0", "Content-Type": OCTETS},
        input_stream=_BreaksOff(data[: 4 * 1024 * 1024], after=1024 * 1024),
    )
    assert r.status_code == 400
    assert web[0].head(location, headers=headers).headers["Upload-Offset"] == str(1024 * 1024)
    assert patch(web[0], headers, location, 1024 * 1024, data[1024 * 1024 : 2 * 1024 * 1024]).status_code == 204
    step = 3 * 1024 * 1024  # not a whole part: each PATCH leaves a tail for the other process
    for turn, offset in enumerate(range(2 * 1024 * 1024, len(data), step)):
        r = patch(web[turn % 2], headers, location, offset, data[offset : offset + step])
        assert r.status_code == 204, r.get_json()
        assert web[(turn + 1) % 2].head(location, headers=headers).headers["Upload-Offset"] == str(
            min(len(data), offset + step)
        )
    upload_id = location.rsplit("/", 1)[1]
    r = web[1].post("/api/jobs", headers=headers, json={"uploads": [upload_id], "variations": 1})
    assert r.status_code == 202, r.get_json()
    job = first.wait(r.get_json()["jobId"])
    assert job["status"] == "completed", job
    source = [k for k in s3.keys(bucket, f"{PREFIX}/jobs/{job['jobId']}/") if "/source_" in k]
    body = s3.client().get_object(Bucket=bucket, Key=source[0])["Body"].read()
    assert body == data
    assert bucket_uploads(s3, bucket) == ([], [])  # the upload's parts and tail are the job's source now


@pytest.mark.e2e
def test_unfinished_uploads_in_the_bucket_count_and_expire(s3, bucket, grainy, tmp_path, monkeypatch):
    settings = make_settings(tmp_path / "data", storage_url=f"s3://{bucket}/{PREFIX}")
    app = create_app(settings)
    client, headers = app.test_client(), {**login(app.test_client()), **TUS}
    storage = for_settings(settings)
    store = app.extensions["refresher"].store
    data = grainy.read_bytes()
    location = begin(client, headers, len(data))
    sent = 6 * 1024 * 1024  # one part and a tail
    assert patch(client, headers, location, 0, data[:sent]).status_code == 204
    keys, unfinished = bucket_uploads(s3, bucket)
    assert len(keys) == 1 and keys[0].endswith("/tail") and len(unfinished) == 1
    assert storage.used_bytes() == sent
    upload_id = location.rsplit("/", 1)[1]
    later = time.time() + settings.upload_ttl_seconds + 1
    assert lifecycle.expire_uploads(store, settings, now=later, storage=storage) == [upload_id]
    assert bucket_uploads(s3, bucket) == ([], [])
    assert storage.used_bytes() == 0

    # every PATCH through this one process: the finished file is checked from its copy here, not fetched back
    location = begin(client, headers, len(data), "grainy.mp4")
    for offset in range(0, len(data), 3 * 1024 * 1024):
        assert patch(client, headers, location, offset, data[offset : offset + 3 * 1024 * 1024]).status_code == 204
    fetched = []
    monkeypatch.setattr(type(storage), "local_copy", lambda self, key: fetched.append(key))
    r = client.post("/api/jobs", headers=headers, json={"uploads": [location.rsplit("/", 1)[1]], "variations": 1})
    assert r.status_code == 202, r.get_json()
    assert fetched == []
    source = [k for k in s3.keys(bucket, f"{PREFIX}/jobs/") if "/source_" in k]
    assert s3.client().get_object(Bucket=bucket, Key=source[0])["Body"].read() == data
    assert bucket_uploads(s3, bucket) == ([], [])
    assert [p for p in (settings.data_dir / "scratch").rglob("*") if p.is_file()] == [], "nothing left in scratch"


@pytest.mark.e2e
def test_a_job_takes_the_finished_upload_in_the_bucket_as_it_is(s3, bucket, grainy, tmp_path, monkeypatch):
    """In a bucket, a finished upload is stored as the source of a job with
    its id: the job made from it takes it with no copy. Until then its row
    owns it (a sweep leaves it; a job not made leaves it); then the job does
    (the upload's expiry leaves it; the job's deletion removes it)."""
    settings = make_settings(tmp_path / "data", storage_url=f"s3://{bucket}/{PREFIX}")
    app = create_app(settings)
    client, headers = app.test_client(), {**login(app.test_client()), **TUS}
    storage = for_settings(settings)
    store = app.extensions["refresher"].store
    data = grainy.read_bytes()
    first_id, second_id = (upload(client, headers, grainy, name) for name in ("a.mp4", "b.mp4"))
    adopted = f"{PREFIX}/jobs/{first_id}/source_{first_id}"
    assert s3.client().get_object(Bucket=bucket, Key=adopted)["Body"].read() == data
    assert lifecycle.sweep_temporaries(store, settings, min_age=0, storage=storage) == []
    assert storage.used_bytes() > 2 * len(data), "finished uploads count toward the limit"

    copies = []
    copy = type(storage).copy
    monkeypatch.setattr(type(storage), "copy", lambda self, a, b: (copies.append(a), copy(self, a, b))[1])
    create_job = store.create_job

    def queue_full(*args, **kwargs):
        raise QueueFull(5, 5)

    monkeypatch.setattr(store, "create_job", queue_full)
    body = {"uploads": [first_id, second_id], "variations": 1}
    assert client.post("/api/jobs", headers=headers, json=body).status_code == 503
    assert s3.client().get_object(Bucket=bucket, Key=adopted)["Body"].read() == data, "a job not made keeps it"
    assert not [k for k in s3.keys(bucket, f"{PREFIX}/jobs/{first_id}/") if k != adopted and "thumbnail" not in k]
    monkeypatch.setattr(store, "create_job", create_job)
    copies.clear()

    r = client.post("/api/jobs", headers=headers, json=body)
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert job["jobId"] == first_id and job["files"][0]["id"] == first_id
    assert copies == [f"jobs/{second_id}/source_{second_id}"], "only the second file is copied"
    assert s3.keys(bucket, f"{PREFIX}/jobs/{second_id}/") == [], "the second upload's own file is gone"
    assert bucket_uploads(s3, bucket) == ([], [])
    later = time.time() + settings.upload_ttl_seconds + 1
    expired = lifecycle.expire_uploads(store, settings, now=later, storage=storage)
    assert sorted(expired) == sorted([first_id, second_id])
    assert s3.client().get_object(Bucket=bucket, Key=adopted)["Body"].read() == data, "the job's now"
    assert lifecycle.sweep_temporaries(store, settings, min_age=0, storage=storage) == []
    assert client.post(f"/api/jobs/{first_id}/cancel", headers=headers).status_code == 200
    assert client.delete(f"/api/jobs/{first_id}", headers=headers).status_code in (200, 204)
    assert s3.keys(bucket, f"{PREFIX}/jobs/") == []


def _receiver_and_row(bucket, tmp_path, length: int):
    settings = make_settings(tmp_path / "data", storage_url=f"s3://{bucket}/{PREFIX}")
    receiver = BucketReceiver(for_settings(settings))
    row = {"id": "overlap", "length": length, "received": 0, "parts": "[]", "tail": 0}
    row.update(receiver.begin(row["id"], length))
    return receiver, row


def _pieces(data: bytes, offset: int = 0, size: int = 256 * 1024):
    for at in range(offset, len(data), size):
        yield data[at : at + size]


def test_parts_go_to_the_bucket_while_the_rest_is_read_and_none_is_held_in_memory(s3, bucket, tmp_path, monkeypatch):
    """Parts are sent from the spool on disk, several at once, while the PATCH
    reads on. A part is read from disk as it is sent (botocore reads 1 MB at
    a time to sign it and to send it): four in flight hold less than the two
    whole parts a PATCH held when parts were sent from memory."""
    data = os.urandom(6 * PART_BYTES + 1000)
    receiver, row = _receiver_and_row(bucket, tmp_path, len(data))
    read_on = threading.Event()  # set when the bytes after the third part are read
    waited = []
    put_part = receiver._put_part

    def first_part_waits_for_the_read(row, number, body):
        if number == 1:
            waited.append(read_on.wait(5))
        return put_part(row, number, body)

    def body():
        for at, piece in zip(range(0, len(data), 256 * 1024), _pieces(data), strict=True):
            if at >= 3 * PART_BYTES:
                read_on.set()
            yield piece

    monkeypatch.setattr(receiver, "_put_part", first_part_waits_for_the_read)
    tracemalloc.start()
    try:
        receiver.append(row, body(), row.update)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * PART_BYTES, f"{peak / 1e6:.1f} MB held"
    assert waited == [True], "the first part was sent while the PATCH read on, not in its way"
    assert row["received"] == len(data) and [p["n"] for p in json.loads(row["parts"])] == [1, 2, 3, 4, 5, 6, 7]
    path = receiver.finished(row)
    assert path.read_bytes() == data, "checked from this host's copy"
    receiver.done_reading(row, path)
    key = f"{PREFIX}/jobs/overlap/source_overlap"
    assert s3.client().get_object(Bucket=bucket, Key=key)["Body"].read() == data
    receiver.discard(row["id"], row)
    assert s3.keys(bucket, f"{PREFIX}/") == []


def test_a_part_that_fails_ends_the_patch_with_the_parts_before_it(s3, bucket, tmp_path, monkeypatch):
    """A failed part: the row counts the parts stored before it and never goes
    back; the rest is sent again from there. A body that breaks off keeps
    what arrived (the tail)."""
    data = os.urandom(4 * PART_BYTES + 600 * 1024)
    receiver, row = _receiver_and_row(bucket, tmp_path, len(data))
    put_part = receiver._put_part

    def second_part_fails(row, number, body):
        if number == 2:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "UploadPart")
        return put_part(row, number, body)

    monkeypatch.setattr(receiver, "_put_part", second_part_fails)
    with pytest.raises(ClientError):
        receiver.append(row, _pieces(data), row.update)
    assert [p["n"] for p in json.loads(row["parts"])] == [1]
    assert row["tail"] == 0 and row["received"] == PART_BYTES
    monkeypatch.setattr(receiver, "_put_part", put_part)

    def breaks_off(offset, end):
        yield from _pieces(data[:end], offset)
        raise OSError("connection reset")

    arrived = 2 * PART_BYTES + 512 * 1024  # then the client goes away
    with pytest.raises(OSError, match="reset"):
        receiver.append(row, breaks_off(row["received"], arrived), row.update)
    assert len(json.loads(row["parts"])) == 2
    assert row["tail"] == arrived - 2 * PART_BYTES and row["received"] == arrived
    receiver.append(row, _pieces(data, arrived), row.update)
    assert row["received"] == len(data)
    path = receiver.finished(row)
    receiver.done_reading(row, path)
    key = f"{PREFIX}/jobs/overlap/source_overlap"
    assert s3.client().get_object(Bucket=bucket, Key=key)["Body"].read() == data


def test_a_patch_to_another_host_resumes_from_the_tail_in_the_bucket(s3, bucket, tmp_path):
    """Two hosts (two scratch folders) take alternate PATCHes: a host without
    the bytes before fetches the tail, and the finished file is fetched back
    for its check."""
    data = os.urandom(3 * PART_BYTES + 300 * 1024)
    first, row = _receiver_and_row(bucket, tmp_path / "a", len(data))
    second = BucketReceiver(for_settings(make_settings(tmp_path / "b" / "data", storage_url=f"s3://{bucket}/{PREFIX}")))
    cuts = [0, PART_BYTES // 2, PART_BYTES + 1000, 2 * PART_BYTES + 7, len(data)]
    for n, (start, end) in enumerate(itertools.pairwise(cuts)):
        (first, second)[n % 2].append(row, _pieces(data[:end], start), row.update)
        assert row["received"] == end
    path = second.finished(row)
    assert path.read_bytes() == data and "receiving" not in path.parts, "fetched back, not a copy of part of it"
    second.done_reading(row, path)
    assert not path.exists()
    key = f"{PREFIX}/jobs/overlap/source_overlap"
    assert s3.client().get_object(Bucket=bucket, Key=key)["Body"].read() == data


def test_one_request_at_a_time_holds_an_upload_and_it_makes_one_job(database):
    """The row's hold and the claim by a job, on SQLite and PostgreSQL alike."""
    store = Store(database)
    store.migrate()
    now = time.time()
    for upload_id in ("first", "second"):
        store.create_upload(
            {"id": upload_id, "name": "ad.mp4", "length": 10, "created_at": now, "expires_at": now + 60}
        )
    assert store.take_upload("first", "a", now + 60, now, lambda holder: False)["holder"] == "a"
    assert store.take_upload("first", "b", now + 60, now, lambda holder: False)["holder"] == "a", "a holds it"
    assert store.take_upload("first", "b", now + 60, now, lambda holder: holder == "a")["holder"] == "b", "a is gone"
    assert not store.advance_upload("first", "a", received=5), "a no longer holds it"
    assert store.advance_upload("first", "b", release=True, received=5)
    assert store.get_upload("first")["received"] == 5 and store.get_upload("first")["holder"] is None
    assert store.take_upload("nothing", "a", now + 60, now, lambda holder: False) is None
    store.claim_uploads(["first", "second"], "job1")
    with pytest.raises(UploadClaimed, match="made job job1"):
        store.claim_uploads(["second"], "job2")
    store.unclaim_uploads(["first", "second"], "job1")
    store.claim_uploads(["second"], "job2")
    with pytest.raises(UploadClaimed, match="no upload missing"):
        store.claim_uploads(["first", "missing"], "job3")
    assert store.get_upload("first")["job_id"] is None, "all or none"
    assert sorted(r["id"] for r in store.expired_uploads(now + 61)) == ["first", "second"]
    assert store.expired_uploads(now) == []
