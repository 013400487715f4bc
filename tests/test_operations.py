"""What whoever runs the service sees: the supervisor's start line, how fast
it stops, the `password` command, LOG_LEVEL, and a log line for each thing
people do to jobs and each refused upload."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest

from refresher import logs, startup
from refresher.media.ffmpeg import STOP_GRACE_SECONDS
from refresher.settings import SettingsError, load_settings
from refresher.store import shown_url
from refresher.webapp import create_app

from .conftest import PASSWORD, make_settings
from .support.servers import wait_until
from .support.api import login


def test_the_start_line_names_the_host_the_database_and_the_storage(make_service, capfd):
    svc = make_service(encode_workers=1, host_id="encoder-7")
    line = next(line for line in capfd.readouterr().err.splitlines() if " running " in line)
    data_dir = svc.settings.data_dir
    assert re.search(r"supervisor \d+ running 1 encode worker\(s\) with \S+; HOST_ID: encoder-7; ", line), line
    assert f"database: SQLite {data_dir / 'refresher.db'}; storage: DATA_DIR {data_dir}" in line, line


def test_a_database_url_is_shown_without_its_password():
    for given, shown in (
        (
            "postgres://app:s3cr%40t@db.example.com:5432/refresher",
            "postgresql+psycopg://app:***@db.example.com:5432/refresher",
        ),
        (
            "postgresql://app@db/x?password=hunter2&sslmode=require",
            "postgresql+psycopg://app@db/x?sslmode=require",
        ),
    ):
        assert shown_url(make_settings(Path("/srv/data"), database_url=given).database) == shown
    settings = make_settings(Path("/srv/data"), storage_url="s3://bucket/refresher")
    assert settings.storage_shown == "s3://bucket/refresher (scratch in /srv/data)"


def test_sigterm_kills_a_running_encode_at_once_and_the_supervisor_is_gone_quickly(make_service, media, capfd):
    """Its partial output is deleted anyway, so a shutdown does not wait for
    ffmpeg to obey `q` (at idle priority on a busy machine it took the whole
    q → SIGTERM → SIGKILL ladder, 4 s)."""
    svc = make_service(encode_workers=1)
    job_id = svc.submit([media["long"]], variations=1)["jobId"]
    wait_until(lambda: svc.get(f"/api/jobs/{job_id}").get_json()["overallProgress"] > 0)
    started = time.monotonic()
    svc.supervisor.stop()
    took = time.monotonic() - started
    log = capfd.readouterr().err
    stopped = rf"variation \S+ of job {job_id} interrupted on host \S+ after [\d.]+ s \(ffmpeg stopped by SIGKILL\)"
    assert re.search(stopped, log), log
    assert "stopped on SIGTERM" in log
    assert took < 2 * STOP_GRACE_SECONDS, f"the supervisor took {took:.1f} s to stop"
    assert svc.get(f"/api/jobs/{job_id}").get_json()["files"][0]["status"] in ("queued", "processing")


def test_the_password_command_says_when_auth_password_is_in_force(tmp_path):
    """Run where AUTH_PASSWORD is set, or where it is not while the service
    runs with it (another shell, a one-off dyno): the generated password
    kept in the database is not the one in force, and is not shown."""
    data_dir = tmp_path / "data"
    chosen = make_settings(data_dir)  # AUTH_PASSWORD set
    shown = create_app(chosen).test_cli_runner().invoke(args=["password"])
    assert shown.exit_code == 1 and "AUTH_PASSWORD is set here: that is the password in force" in shown.output
    assert PASSWORD not in shown.output

    unset = make_settings(data_dir, auth_password=None)
    startup.prepare(chosen)  # the service starts with AUTH_PASSWORD
    elsewhere = create_app(unset)
    generated = elsewhere.extensions["refresher"].password
    shown = elsewhere.test_cli_runner().invoke(args=["password"])
    assert shown.exit_code == 1 and "last started with AUTH_PASSWORD set" in shown.output, shown.output
    assert generated not in shown.output

    startup.prepare(unset)  # started again without it: the generated one is in force
    shown = create_app(unset).test_cli_runner().invoke(args=["password"])
    assert shown.exit_code == 0 and shown.output.strip() == generated


def test_log_level_is_checked_and_quiets_the_libraries(tmp_path):
    assert load_settings({}).log_level == "INFO"
    assert load_settings({"LOG_LEVEL": " warning "}).log_level == "WARNING"
    with pytest.raises(SettingsError, match="LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got 'loud'"):
        load_settings({"LOG_LEVEL": "loud"})
    root = logging.getLogger()
    before = root.level
    try:
        create_app(make_settings(tmp_path / "data", log_level="DEBUG"))
        assert root.level == logging.DEBUG
        for name in ("botocore", "boto3", "s3transfer", "urllib3"):
            assert not logging.getLogger(f"{name}.anything").isEnabledFor(logging.INFO), name
        logs.configure("ERROR")
        assert not logging.getLogger("refresher.supervisor").isEnabledFor(logging.WARNING)
    finally:
        root.setLevel(before)


def test_what_people_do_to_jobs_and_refused_uploads_are_logged(app, client, media, caplog):
    caplog.set_level(logging.INFO)
    headers = login(client)
    r = client.post(
        "/api/jobs",
        headers=headers,
        data={"videos": [(open(media["not_video"], "rb"), "notes.mp4")]},
        content_type="multipart/form-data",
    )
    assert r.status_code == 415
    assert re.search(r"upload refused: 415 notes\.mp4 is not a readable MP4/MOV video.* \(/api/jobs from ", caplog.text)

    def submit() -> str:
        data = {"videos": [(open(media["clip"], "rb"), "ad.mp4")], "variations": "1"}
        return client.post("/api/jobs", headers=headers, data=data, content_type="multipart/form-data").get_json()[
            "jobId"
        ]

    store = app.extensions["refresher"].store
    cancelled, failed = submit(), submit()
    assert client.post(f"/api/jobs/{cancelled}/cancel", headers=headers).status_code == 200  # nothing ran yet
    assert client.post(f"/api/jobs/{cancelled}/resume", headers=headers).status_code == 202
    store.fail_queued_job(failed, "no disk for it", time.time(), 3600)
    assert client.post(f"/api/jobs/{failed}/retry", headers=headers).status_code == 202
    client.post(f"/api/jobs/{failed}/cancel", headers=headers)
    rerun = client.post(f"/api/jobs/{failed}/rerun", headers=headers, json={"seed": "again"}).get_json()["jobId"]
    assert client.delete(f"/api/jobs/{failed}", headers=headers).status_code == 204
    text = caplog.text
    assert f"job {cancelled} resumed: 1 variation(s) queued again, 0 kept" in text
    assert f"job {failed} retried: 1 variation(s) queued again, 0 kept" in text
    assert f"job {rerun} is a rerun of job {failed} (seed 'again')" in text
    assert f"job {failed} deleted with its files" in text
