"""Authentication, validation and the shapes of the HTTP contract."""

from __future__ import annotations

import io
import threading
import time

import pytest

from refresher.api import jobs as api_jobs
from refresher.store import Store, new_id
from refresher.webapp import create_app

from .conftest import sql, PASSWORD, make_settings
from .support.api import assert_nothing_left, login


def test_login_gives_a_token_that_expires_in_a_day(client):
    r = client.post("/api/auth", json={"password": PASSWORD})
    body = r.get_json()
    assert r.status_code == 200 and set(body) == {"token", "expiresAt"}
    expires = time.mktime(time.strptime(body["expiresAt"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(expires - (time.time() + 86400)) < 60
    assert client.post("/api/auth", data={"password": PASSWORD}).status_code == 200, "a form field works too"


@pytest.mark.parametrize(
    "body, status",
    [
        ({"json": {}}, 400),
        ({"json": {"password": ""}}, 400),
        ({"json": {"password": 5}}, 400),
        ({"json": {"password": "wrong"}}, 401),
        ({"data": "nope", "content_type": "application/json"}, 400),
    ],
)
def test_login_errors(client, body, status):
    r = client.post("/api/auth", **body)
    assert r.status_code == status and isinstance(r.get_json()["error"], str)


def test_login_is_throttled_after_failures(client):
    for _ in range(10):
        assert client.post("/api/auth", json={"password": "wrong"}).status_code == 401
    r = client.post("/api/auth", json={"password": "wrong"})
    assert r.status_code == 429 and "Retry-After" in r.headers and "error" in r.get_json()


@pytest.mark.parametrize(
    "method, url",
    [
        ("get", "/api/jobs"),
        ("post", "/api/jobs"),
        ("get", "/api/jobs/x"),
        ("get", "/api/jobs/x/events"),
        ("post", "/api/jobs/x/cancel"),
        ("get", "/api/jobs/x/download"),
        ("get", "/api/jobs/x/outputs/y"),
        ("get", "/api/jobs/x/thumbnail"),
        ("delete", "/api/jobs/x"),
        ("get", "/api/tokens"),
        ("post", "/api/tokens"),
        ("delete", "/api/tokens/x"),
        ("post", "/api/jobs/x/retry"),
        ("post", "/api/jobs/x/resume"),
        ("post", "/api/jobs/x/rerun"),
    ],
)
@pytest.mark.parametrize("token", [None, "garbage", "vr_unknown"])
def test_every_protected_route_needs_a_token(client, method, url, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = getattr(client, method)(url, headers=headers)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in r.get_json()


def test_open_routes(client):
    assert client.get("/api/openapi.json").status_code == 200
    r = client.get("/api/health")  # no supervisor runs here: degraded, and it says why
    body = r.get_json()
    assert r.status_code == 503 and body["status"] == "degraded" and "supervisor" in body["reason"]
    assert set(body) == {"status", "version", "supervisor", "queue", "warnings", "reason"}, (
        "no machine details without a token"
    )
    body = client.get("/api/health", headers=login(client)).get_json()
    assert set(body) >= {"status", "version", "ffmpeg", "queue", "disk", "hosts", "warnings"}
    assert body["ffmpeg"].startswith("ffmpeg version")
    assert client.get("/api/health", headers={"Authorization": "Bearer nope"}).status_code == 503, (
        "a bad token is no token here: still open"
    )


def test_a_web_process_that_encodes_nothing_stays_healthy_without_worker_hosts(tmp_path):
    """A load balancer must keep it in rotation: jobs wait in the queue."""
    app = create_app(make_settings(tmp_path / "data", encode_workers=0))
    client = app.test_client()
    r = client.get("/api/health")
    assert r.status_code == 200 and r.get_json()["supervisor"] == "elsewhere"
    assert r.get_json()["warnings"] == ["no worker host is running: jobs wait in the queue until one starts"]
    body = client.get("/api/health", headers=login(client)).get_json()
    assert body["hosts"] == [] and body["status"] == "ok"


def test_health_is_degraded_when_the_database_cannot_be_used(tmp_path):
    app = create_app(make_settings(tmp_path / "data", encode_workers=0))
    app.extensions["refresher"].store.close()  # its pooled connections go; the next one finds no tables
    for name in ("refresher.db", "refresher.db-wal", "refresher.db-shm"):
        (tmp_path / "data" / name).unlink(missing_ok=True)
    r = app.test_client().get("/api/health")
    assert r.status_code == 503 and "the database cannot be used" in r.get_json()["reason"]


def test_expired_session_token_is_refused(tmp_path):
    app = create_app(make_settings(tmp_path / "data", token_ttl_seconds=1))
    client = app.test_client()
    headers = login(client)
    assert client.get("/api/jobs", headers=headers).status_code == 200
    time.sleep(2.1)
    assert client.get("/api/jobs", headers=headers).status_code == 401


def test_token_signed_with_another_secret_is_refused(tmp_path, client):
    other = create_app(make_settings(tmp_path / "other", token_secret="another")).test_client()
    assert client.get("/api/jobs", headers=login(other)).status_code == 401


def test_sign_out_ends_the_session_token_at_once(client):
    mine, other = login(client), login(client)
    assert client.delete("/api/auth").status_code == 401, "no token"
    assert client.delete("/api/auth", headers={"Authorization": "Bearer garbage"}).status_code == 401
    r = client.delete("/api/auth", headers=mine)
    assert r.status_code == 204 and r.get_data() == b""
    for method, url in [("get", "/api/jobs"), ("post", "/api/tokens"), ("delete", "/api/auth")]:
        r = getattr(client, method)(url, headers=mine, json={"name": "x"})
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), url
    assert client.get("/api/jobs", headers=other).status_code == 200, "only that session ended"


def test_sign_out_everywhere_ends_every_session_on_every_host_but_not_api_tokens(tmp_path, database):
    # two hosts (each its own DATA_DIR) on one database, on each engine
    first, second = (
        create_app(make_settings(tmp_path / name, database_url=database)).test_client() for name in ("first", "second")
    )
    mine, other = login(first), login(second)
    api_token = first.post("/api/tokens", json={"name": "ci"}, headers=mine).get_json()["token"]
    api = {"Authorization": f"Bearer {api_token}"}
    third = login(first)
    assert first.delete("/api/auth", headers=third).status_code == 204
    assert second.get("/api/jobs", headers=third).status_code == 401, "ended on one host, refused on the other"
    assert second.get("/api/jobs", headers=mine).status_code == 200
    assert first.delete("/api/auth?all=1", headers=api).status_code == 403, "an API token is no session"
    assert first.delete("/api/auth?all=maybe", headers=mine).status_code == 400
    assert second.delete("/api/auth?all=1", headers=other).status_code == 204
    for client in (first, second):
        for headers in (mine, other):
            assert client.get("/api/jobs", headers=headers).status_code == 401
        assert client.get("/api/jobs", headers=api).status_code == 200, "API tokens are revoked one by one"
    fresh = login(first)
    assert second.get("/api/jobs", headers=fresh).status_code == 200, "a new sign-in works at once"


def test_a_session_token_is_good_until_the_end_it_was_given(tmp_path):
    data = tmp_path / "data"
    short = create_app(make_settings(data, token_ttl_seconds=1)).test_client()
    headers = login(short)
    longer = create_app(make_settings(data, token_ttl_seconds=3600)).test_client()
    assert longer.get("/api/jobs", headers=headers).status_code == 200
    time.sleep(1.1)
    assert longer.get("/api/jobs", headers=headers).status_code == 401, "a longer TTL later does not extend it"


def test_unknown_job_is_404(client):
    headers = login(client)
    for method, url in [
        ("get", "/api/jobs/nope"),
        ("post", "/api/jobs/nope/cancel"),
        ("get", "/api/jobs/nope/download"),
        ("delete", "/api/jobs/nope"),
        ("get", "/api/jobs/nope/thumbnail"),
        ("get", "/api/jobs/nope/events"),
    ]:
        r = getattr(client, method)(url, headers=headers)
        assert r.status_code == 404 and "nope" in r.get_json()["error"], url


def _upload(client, headers, files, **fields):
    data = {"videos": files, **fields}
    return client.post("/api/jobs", headers=headers, data=data, content_type="multipart/form-data")


def test_upload_rejections_leave_nothing_behind(app, client, media):
    headers = login(client)
    clip = lambda: (open(media["clip"], "rb"), "clip.mp4")  # noqa: E731
    cases = [
        ([], {}, 400, "no files"),
        ([clip() for _ in range(11)], {}, 400, "too many files"),
        ([clip()], {"variations": "0"}, 400, "variations"),
        ([clip()], {"variations": "21"}, 400, "variations"),
        ([clip()], {"variations": "abc"}, 400, "variations"),
        ([clip()], {"variations": "2.5"}, 400, "variations"),
        ([(open(media["not_video"], "rb"), "notes.mp4")], {}, 415, "notes.mp4"),
        ([(open(media["audio_only"], "rb"), "song.mp4")], {}, 415, "song.mp4"),
        ([(open(media["truncated"], "rb"), "cut.mov")], {}, 415, "cut.mov"),
        ([(io.BytesIO(b""), "empty.mp4")], {}, 415, "empty.mp4"),
        ([clip(), (open(media["not_video"], "rb"), "second.mp4")], {}, 415, "second.mp4"),
    ]
    for files, fields, status, words in cases:
        r = _upload(client, headers, files, **fields)
        assert r.status_code == status, (words, r.get_json())
        assert words in r.get_json()["error"], r.get_json()
        assert_nothing_left(app)


def test_oversized_file_is_413_and_leaves_nothing(tmp_path, media):
    app = create_app(make_settings(tmp_path / "data", max_upload_mb=0.1))
    client = app.test_client()
    r = _upload(client, login(client), [(open(media["clip"], "rb"), "big.mp4")])  # 0.2 MB
    assert r.status_code == 413 and "big.mp4" in r.get_json()["error"]
    assert_nothing_left(app)
    r = _upload(client, login(client), [(open(media["long"], "rb"), "huge.mp4")])  # over the request limit
    assert r.status_code == 413 and "MAX_UPLOAD_MB" in r.get_json()["error"]
    assert_nothing_left(app)


def test_accepted_upload_shape(app, client, media):
    headers = login(client)
    r = _upload(client, headers, [(open(media["clip"], "rb"), "../../etc/ad\x07.mp4")], variations="2", seed="s1")
    assert r.status_code == 202
    body = r.get_json()
    assert r.headers["Location"] == f"/api/jobs/{body['jobId']}" == body["statusUrl"]
    assert body["status"] == "queued" and body["variationsPerVideo"] == 2 and body["totalVariations"] == 2
    assert body["files"][0]["name"] == "ad.mp4", "no path, no control characters"
    assert body["files"][0]["size"] == media["clip"].stat().st_size
    job = client.get(body["statusUrl"], headers=headers).get_json()
    assert job["status"] == "queued" and job["seed"] == "s1" and job["overallProgress"] == 0
    assert job["files"][0]["durationSeconds"] == pytest.approx(2.0, abs=0.05)
    assert job["files"][0]["status"] == "queued" and job["files"][0]["outputs"] == []
    assert job["createdAt"].endswith("Z") and job["expiresAt"].endswith("Z")
    default = _upload(client, headers, [(open(media["clip"], "rb"), "x.mp4")]).get_json()
    assert default["variationsPerVideo"] == 5 and default["seed"]


def test_files_behind_the_password_are_never_kept_by_shared_caches(app, client, media):
    headers = login(client)
    job_id = _upload(client, headers, [(open(media["clip"], "rb"), "ad.mp4")], variations="1").get_json()["jobId"]
    # the output as the encoder would leave it (no encoder runs in this app)
    settings = app.extensions["refresher"].settings
    store, data_dir = Store.shared(settings.database), settings.data_dir
    [(output_id, output_path)] = sql(store, "SELECT id, output_path FROM variations WHERE job_id = ?", job_id)
    (data_dir / output_path).parent.mkdir(parents=True, exist_ok=True)
    (data_dir / output_path).write_bytes(media["clip"].read_bytes())
    sql(
        store,
        "UPDATE variations SET status = 'completed', size = ? WHERE id = ?",
        media["clip"].stat().st_size,
        output_id,
    )
    sql(
        store, "UPDATE jobs SET status = 'completed', progress = 100, finished_at = ? WHERE id = ?", time.time(), job_id
    )

    for url, extra in [
        (f"/api/jobs/{job_id}/outputs/{output_id}", {}),
        (f"/api/jobs/{job_id}/outputs/{output_id}", {"Range": "bytes=0-99"}),
        (f"/api/jobs/{job_id}/thumbnail", {}),
        (f"/api/jobs/{job_id}/download", {}),
    ]:
        r = client.get(url, headers={**headers, **extra})
        assert r.status_code in (200, 206), (url, r.status_code)
        cache_control = {d.strip().split("=")[0] for d in r.headers["Cache-Control"].split(",")}
        assert "private" in cache_control and "public" not in cache_control, (url, r.headers["Cache-Control"])
        assert {"authorization", "cookie"} <= {v.strip().lower() for v in r.headers["Vary"].split(",")}, url


def test_ids_never_look_like_command_line_options():
    ids = [new_id() for _ in range(5000)]
    assert all(i[0] not in "-_" and len(i) == 12 for i in ids) and len(set(ids)) == len(ids)


def test_a_new_password_ends_existing_sessions(tmp_path):
    data = tmp_path / "data"
    old = create_app(make_settings(data)).test_client()
    headers = login(old)
    assert old.get("/api/jobs", headers=headers).status_code == 200
    new = create_app(make_settings(data, auth_password="a brand new password")).test_client()
    assert new.get("/api/jobs", headers=headers).status_code == 401


def test_wrong_passwords_sent_at_once_are_evaluated_within_the_budget(app):
    """100 wrong passwords at once: the throttle used to test its count before
    each attempt and add to it after, so most of them were evaluated."""
    start = threading.Barrier(100)
    codes = []

    def attempt():
        client = app.test_client()
        start.wait()
        codes.append(client.post("/api/auth", json={"password": "wrong"}).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(codes)) == [401, 429] and codes.count(401) == 10, sorted(codes)


def test_event_streams_end_when_their_token_is_signed_out_or_revoked(app, client, media, monkeypatch):
    """They used to go on for up to 600 s (a queued job, here: no supervisor runs).
    Signed out and revoked through the store, as another worker would: a
    stream is read on this thread, where a request of its own would be nested."""
    monkeypatch.setattr(api_jobs, "EVENTS_RECHECK_SECONDS", 0.2, raising=False)
    store = app.extensions["refresher"].store
    session = login(client)
    job_id = _upload(client, session, [(open(media["clip"], "rb"), "ad.mp4")]).get_json()["jobId"]
    secret = client.post("/api/tokens", headers=session, json={"name": "ci"}).get_json()
    api = {"Authorization": f"Bearer {secret['token']}"}
    for headers, sign_out in (
        (api, lambda: store.delete_api_token(secret["id"])),
        (session, lambda: store.end_every_session(time.time())),
    ):
        stream = client.get(f"/api/jobs/{job_id}/events", headers=headers, buffered=False)
        events = iter(stream.response)
        assert next(events).startswith(b"retry:") and b'"status":"queued"' in next(events)
        sign_out()
        started = time.monotonic()
        assert next(events).startswith(b"event: signed-out\n"), "not a keep-alive 15 s later"
        assert time.monotonic() - started < 5
        assert next(events, None) is None
        stream.close()


def test_one_client_holds_a_few_event_streams_at_most(client, media):
    """(A held stream keeps its request context pushed on this thread: they are closed last first.)"""
    session, other = login(client), login(client)
    job_id = _upload(client, session, [(open(media["clip"], "rb"), "ad.mp4")]).get_json()["jobId"]
    url = f"/api/jobs/{job_id}/events"
    held = [client.get(url, headers=session, buffered=False) for _ in range(4)]
    assert [r.status_code for r in held] == [200] * 4
    refused = client.get(url, headers=session)
    assert refused.status_code == 429 and "4 live progress streams" in refused.get_json()["error"]
    assert int(refused.headers["Retry-After"]) > 0
    another = client.get(url, headers=other, buffered=False)
    assert another.status_code == 200, "another client is not refused"
    another.close()
    held.pop().close()
    held.append(client.get(url, headers=session, buffered=False))
    assert held[-1].status_code == 200, "a closed stream gives its place back"
    for r in reversed(held):
        r.close()
