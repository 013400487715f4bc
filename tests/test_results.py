"""Getting results out: the streaming ZIP, live progress, thumbnails, deletion."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import unicodedata
import zipfile
from pathlib import Path

import pytest

from refresher.archive import folder_names
from refresher import intake
from refresher.media import ffmpeg
from refresher.names import content_disposition
from refresher.store import Store

from .conftest import PASSWORD, sql, decode_errors
from .support.servers import wait_until


def sse_events(response, limit=10_000):
    """Parse a text/event-stream response body into (event, data) pairs."""
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            event, data = "message", []
            for line in block.splitlines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
            if data:
                yield event, json.loads("\n".join(data))
                limit -= 1
                if not limit:
                    return


def test_zip_layout_store_method_manifest_and_length(service, media, tmp_path):
    same_name = tmp_path / "clip.mp4"
    same_name.write_bytes(media["clip2"].read_bytes())
    job = service.wait(
        service.submit([media["clip"], same_name, media["clip2"]], variations=2, seed="zip-test")["jobId"]
    )
    r = service.get(f"/api/jobs/{job['jobId']}/download")
    assert r.status_code == 200 and r.mimetype == "application/zip"
    assert int(r.headers["Content-Length"]) == len(r.data), "Content-Length equals the bytes sent"
    assert r.headers["Content-Disposition"] == f'attachment; filename="refresher-{job["jobId"]}.zip"'
    archive = zipfile.ZipFile(io.BytesIO(r.data))
    assert archive.testzip() is None
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    names = archive.namelist()
    folders = sorted({n.split("/")[0] for n in names if "/" in n})
    assert folders == ["clip", "clip (2)", "second clip"], "one folder per source, same names kept apart"
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["jobId"] == job["jobId"] and manifest["seed"] == "zip-test"
    assert len(manifest["outputs"]) == 6 == len(names) - 1
    by_path = {o["path"]: o for o in manifest["outputs"]}
    for f in job["files"]:
        for o in f["outputs"]:
            entry = next(e for e in by_path.values() if e["id"] == o["id"])
            assert entry["source"] == f["name"] and entry["variationIndex"] == o["variationIndex"]
            assert entry["effects"] == o["effects"] and entry["size"] == o["size"]
            assert archive.getinfo(entry["path"]).file_size == o["size"]
            assert archive.read(entry["path"]) == service.get(o["url"]).data


WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def assert_extracts_everywhere(path: str) -> None:
    """A ZIP path that Windows, macOS and Linux can all create."""
    assert len(path) <= 200, path
    for part in path.split("/"):
        assert part and part not in (".", ".."), path
        assert not re.search(r'[<>:"\\|?*\x00-\x1f]', part), path
        assert part == part.rstrip(". "), f"{path!r}: Windows drops a trailing dot or space"
        assert part.split(".")[0].rstrip(" ").upper() not in WINDOWS_DEVICES, path
        assert len(part.encode()) <= 255, path


def assert_nothing_invisible(text: str) -> None:
    hidden = [f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in INVISIBLE and c != "\n"]
    assert not hidden, f"{hidden} in {text[:200]!r}"


@pytest.mark.parametrize(
    "names",
    [
        ["a.mp4", "a.mp4", "a (2).mp4"],
        ["a (2).mp4", "a.mp4", "a.mp4"],
        ["a.mp4", "A.mp4", "a.MOV", "a (2).mp4", "A (2).mp4"],
        ["Straße.mp4", "STRASSE.mp4", "e\u0301.mp4", "\u00e9.mp4"],
        ["x" * 200 + "1.mp4", "x" * 200 + "2.mp4", "x" * 200 + "1.mp4"],
        ["manifest.json.mp4", "MANIFEST.JSON.mov"],
        ['a"b.mp4', "a<b.mp4", "a>b.mp4", "a:b.mp4", "a|b.mp4", "a?b.mp4", "a*b.mp4", "a\\b.mp4"],
        ["CON.mp4", "nul.mp4", "com1.mp4", "LPT9.mov", "aux.tar.mp4", "COM\u00b9.mp4", "prn .mp4"],
        ["trailing. .mp4", "dots....mp4", ".mp4", "\u202e.mp4", " .mp4"],
    ],
)
def test_every_source_gets_its_own_portable_folder(names):
    folders = folder_names([{"id": str(i), "name": n} for i, n in enumerate(names)])
    assert len(folders) == len(names)
    keys = [unicodedata.normalize("NFC", f.casefold()) for f in folders.values()]
    assert len(set(keys) | {"manifest.json"}) == len(names) + 1, f"two sources share a folder: {folders}"
    for folder in folders.values():
        assert_extracts_everywhere(f"{folder}/{'v' * 95}.mp4")


def test_names_shown_and_zipped_are_visible_and_portable(make_service, media):
    """Names with bidi overrides, separators and characters Windows refuses,
    and sources sharing a name: the API, the manifest and the ZIP show
    nothing invisible, and every source has a folder of its own."""
    svc = make_service(encode_workers=1)
    names = [
        "invoice\u202egpj.mp4",
        "a.mp4",
        "a.mp4",
        "a (2).mp4",
        "A.mp4",
        "line\u2028break.mp4",
        'a"b.mp4',
        "CON.mp4",
        "zero\u200bwidth\ufeff.mp4",
        "dot. .mp4",
    ]
    data = {"videos": [(open(media["clip"], "rb"), name) for name in names], "variations": "1"}
    r = svc.post("/api/jobs", data=data, content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    accepted = r.get_json()
    assert [f["name"] for f in accepted["files"]][:2] == ["invoicegpj.mp4", "a.mp4"]
    job = svc.wait(accepted["jobId"])
    assert job["status"] == "completed"
    listing = svc.get("/api/jobs").get_json()
    archive = zipfile.ZipFile(io.BytesIO(svc.get(f"/api/jobs/{job['jobId']}/download").data))
    manifest = archive.read("manifest.json").decode()
    for shown in (
        json.dumps(accepted, ensure_ascii=False),
        json.dumps(job, ensure_ascii=False),
        json.dumps(listing, ensure_ascii=False),
        manifest,
        *archive.namelist(),
    ):
        assert_nothing_invisible(shown)
    folders = {n.split("/")[0] for n in archive.namelist() if "/" in n}
    assert len(folders) == len(names), f"one folder per source: {sorted(folders)}"
    assert len({unicodedata.normalize("NFC", f.casefold()) for f in folders}) == len(names)
    for path in archive.namelist():
        assert_extracts_everywhere(path)
    sources = {o["sourceId"]: o["path"].split("/")[0] for o in json.loads(manifest)["outputs"]}
    assert len(set(sources.values())) == len(sources) == len(names)


def test_download_status_codes(make_service, media):
    svc = make_service(encode_workers=1)
    running = svc.submit([media["slow"]], variations=1)["jobId"]
    queued = svc.submit([media["clip"]], variations=1)["jobId"]
    r = svc.get(f"/api/jobs/{queued}/download")
    assert r.status_code == 409 and r.get_json()["status"] == "queued"
    wait_until(lambda: svc.get(f"/api/jobs/{running}").get_json()["status"] == "processing")
    r = svc.get(f"/api/jobs/{running}/download")
    assert r.status_code == 409 and r.get_json()["status"] == "processing"
    svc.post(f"/api/jobs/{queued}/cancel")
    r = svc.get(f"/api/jobs/{queued}/download")
    assert r.status_code == 404 and "no outputs" in r.get_json()["error"]
    svc.post(f"/api/jobs/{running}/cancel")
    assert svc.get("/api/jobs/nope/download").status_code == 404
    conn = Store.shared(svc.settings.database)
    sql(conn, "UPDATE jobs SET expires_at = ? WHERE id = ?", time.time() - 1, queued)
    assert svc.get(f"/api/jobs/{queued}/download").status_code == 410


def test_events_stream_until_final_status(service, media):
    job_id = service.submit([media["long"]], variations=2)["jobId"]
    r = service.get(f"/api/jobs/{job_id}/events", buffered=False)
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    events = list(sse_events(r))
    statuses = [data["status"] for _, data in events]
    progress = [data["overallProgress"] for _, data in events]
    assert statuses[-1] == "completed" and progress[-1] == 100
    assert progress == sorted(progress) and len(events) >= 2
    assert events[-1][1] == service.get(f"/api/jobs/{job_id}").get_json(), "the same JSON as the status route"


def test_events_of_finished_job_is_one_event(service, media):
    job = service.wait(service.submit([media["clip"]], variations=1)["jobId"])
    events = list(sse_events(service.get(f"/api/jobs/{job['jobId']}/events", buffered=False)))
    assert [e[1]["status"] for e in events] == ["completed"]


def test_delete_finished_job_removes_rows_and_files(service, media):
    job = service.wait(service.submit([media["clip"]], variations=2)["jobId"])
    folder = service.settings.data_dir / "jobs" / job["jobId"]
    assert folder.exists()
    r = service.delete(f"/api/jobs/{job['jobId']}")
    assert r.status_code == 204 and r.data == b""
    assert not folder.exists()
    assert service.get(f"/api/jobs/{job['jobId']}").status_code == 404
    conn = Store.shared(service.settings.database)
    assert sql(conn, "SELECT COUNT(*) FROM variations")[0][0] == 0
    assert service.delete(f"/api/jobs/{job['jobId']}").status_code == 404


def test_delete_running_job_is_409(make_service, media):
    svc = make_service(encode_workers=1)
    job_id = svc.submit([media["slow"]], variations=1)["jobId"]
    r = svc.delete(f"/api/jobs/{job_id}")
    assert r.status_code == 409 and r.get_json()["status"] in ("queued", "processing")
    svc.post(f"/api/jobs/{job_id}/cancel")
    assert svc.delete(f"/api/jobs/{job_id}").status_code == 204


def test_thumbnail_near_two_seconds(service, media):
    job = service.submit([media["long"]], variations=1)
    r = service.get(f"/api/jobs/{job['jobId']}/thumbnail")
    assert r.status_code == 200 and r.mimetype == "image/webp"
    width = int.from_bytes(r.data[26:28], "little") & 0x3FFF if r.data[12:16] == b"VP8 " else None
    assert width in (None, 320)
    assert decode_errors_bytes(r.data, service) == ""


def decode_errors_bytes(data: bytes, svc) -> str:
    path = svc.settings.data_dir / "thumb-check.webp"
    path.write_bytes(data)
    try:
        return decode_errors(path)
    finally:
        path.unlink()


@pytest.mark.parametrize(
    "name, header",
    [
        ("Sommer Kampagne.zip", 'attachment; filename="Sommer Kampagne.zip"'),
        ("über.mp4", "attachment; filename=\"uber.mp4\"; filename*=UTF-8''%C3%BCber.mp4"),
        ("日本.zip", "attachment; filename=\"refresher-J.zip\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.zip"),
        ('say "hi"\\now.mp4', "attachment; filename=\"say hinow.mp4\"; filename*=UTF-8''say%20%22hi%22%5Cnow.mp4"),
        ("", "attachment"),
    ],
)
def test_every_download_names_its_file_in_ascii_and_in_full(name, header):
    """One rule for the ZIP, the outputs and the thumbnail: an ASCII name every
    client reads, never a quote or backslash that would end it early, and the
    name itself for clients that read `filename*`."""
    assert content_disposition(name, "attachment", "refresher-J") == header


def test_an_upload_s_videos_are_taken_one_probe_at_a_time_and_the_thumbnail_is_the_first_s(client, media, monkeypatch):
    """The intake takes each video as it arrives, but one client's ffmpeg
    calls hold one probe slot at a time (the other slot stays for other
    clients); the thumbnail is the first video's, though the second is done
    first."""
    lock = threading.Lock()
    calls, running, most = [], [0], [0]
    second_done = threading.Event()

    def timed(name, real):
        def call(binary, path, *args, **kwargs):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            started = time.monotonic()
            try:
                return real(binary, path, *args, **kwargs)
            finally:
                with lock:
                    running[0] -= 1
                    calls.append((name, Path(path).name, started, time.monotonic()))
                    if name == "demux" and Path(path).name == "part1":  # the second video's
                        second_done.set()

        return call

    for name in ("probe", "demux", "make_thumbnail"):
        monkeypatch.setattr(ffmpeg, name, timed(name, getattr(ffmpeg, name)))
    make_thumbnail = intake.EarlyIntake._make_thumbnail

    def thumbnail_once_the_second_is_done(self, video, info):
        # the first video's thumbnail is made only once the second video is
        # done, whatever the machine's load (waiting before its slot is taken)
        assert second_done.wait(30)
        return make_thumbnail(self, video, info)

    monkeypatch.setattr(intake.EarlyIntake, "_make_thumbnail", thumbnail_once_the_second_is_done)
    token = client.post("/api/auth", json={"password": PASSWORD}).get_json()["token"]
    r = client.post(
        "/api/jobs",
        headers={"Authorization": f"Bearer {token}"},
        content_type="multipart/form-data",
        data={
            "videos": [(open(media["long"], "rb"), "first.mp4"), (open(media["clip2"], "rb"), "b.mp4")],
            "variations": "1",
        },
    )
    assert r.status_code == 202, r.get_json()
    first, second = sorted({part for _, part, _, _ in calls})  # the staged parts, in the order they came
    spans = {(name, part): (start, end) for name, part, start, end in calls}
    assert [part for name, part, _, _ in calls if name == "make_thumbnail"] == [first]
    assert spans["demux", second][1] < spans["make_thumbnail", first][1], (
        "the second video was done before the first one's thumbnail: it is the first's all the same"
    )
    assert most[0] == 1, "one client, one probe slot at a time"
    job = client.get(f"/api/jobs/{r.get_json()['jobId']}", headers={"Authorization": f"Bearer {token}"}).get_json()
    image = client.get(job["thumbnailUrl"], headers={"Authorization": f"Bearer {token}"})
    assert image.status_code == 200 and image.data[8:12] == b"WEBP"
