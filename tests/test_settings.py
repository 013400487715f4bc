"""Settings come from the environment; a bad value stops start-up with one line."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from refresher.settings import Settings, SettingsError, describe, load_settings

from .conftest import ROOT


def test_defaults():
    s = load_settings({})
    assert (s.port, s.web_concurrency, s.token_ttl_seconds, s.max_upload_mb) == (8000, 2, 86400, 500)
    assert (s.job_ttl_hours, s.storage_limit_mb, s.cleanup_interval_seconds) == (24, 3072, 300)
    assert s.max_duration_seconds == 300
    assert s.encode_workers == os.cpu_count() and s.data_dir == Path.cwd() / "data"
    assert s.auth_password is None and s.token_secret is None and s.ffmpeg_binary is None


def test_a_relative_data_dir_is_made_absolute_once_from_where_the_process_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings({"DATA_DIR": "rel/data", "DATABASE_URL": "sqlite:///db/x.db"})
    monkeypatch.chdir("/")
    assert s.data_dir == tmp_path / "rel" / "data" and s.data_dir.is_absolute()
    assert s.db_path == tmp_path / "db" / "x.db"
    assert Settings.from_json(s.to_json()).data_dir == s.data_dir, "what a started process is handed"


def test_values_are_read():
    s = load_settings(
        {
            "PORT": "9000",
            "ENCODE_WORKERS": "3",
            "JOB_TTL_HOURS": "0.001",
            "CLEANUP_INTERVAL_SECONDS": "0.5",
            "DATA_DIR": "/srv/x",
            "AUTH_PASSWORD": "pw",
        }
    )
    assert (s.port, s.encode_workers, s.job_ttl_hours, s.cleanup_interval_seconds) == (9000, 3, 0.001, 0.5)
    assert s.job_ttl_seconds == pytest.approx(3.6) and s.data_dir == Path("/srv/x") and s.auth_password == "pw"


@pytest.mark.parametrize(
    "raw, host, bind",
    [
        (None, "0.0.0.0", "0.0.0.0:8000"),
        ("127.0.0.1", "127.0.0.1", "127.0.0.1:8000"),
        ("::1", "::1", "[::1]:8000"),
        ("[::]", "::", "[::]:8000"),
        ("localhost", "localhost", "localhost:8000"),
    ],
)
def test_host_sets_the_listening_address(raw, host, bind):
    s = load_settings({} if raw is None else {"HOST": raw})
    assert (s.host, s.bind) == (host, bind)


def test_every_documented_setting_is_read():
    documented = {
        "PORT",
        "WEB_CONCURRENCY",
        "DATA_DIR",
        "AUTH_PASSWORD",
        "TOKEN_SECRET",
        "TOKEN_TTL_SECONDS",
        "ENCODE_WORKERS",
        "MAX_UPLOAD_MB",
        "JOB_TTL_HOURS",
        "STORAGE_LIMIT_MB",
        "CLEANUP_INTERVAL_SECONDS",
        "FFMPEG_BINARY",
        "DATABASE_URL",
        "HOST",
        "HOST_ID",
        "HOST_TIMEOUT_SECONDS",
        "MAX_DURATION_SECONDS",
    }
    assert documented <= set(describe())
    readme = (ROOT / "README.md").read_text()
    for name in describe():
        assert f"`{name}`" in readme, f"{name} is not documented in the README"


@pytest.mark.parametrize(
    "name, value",
    [
        ("ENCODE_WORKERS", "abc"),
        ("ENCODE_WORKERS", "-1"),
        ("PORT", "70000"),
        ("WEB_CONCURRENCY", "-1"),
        ("JOB_TTL_HOURS", "soon"),
        ("JOB_TTL_HOURS", "0"),
        ("MAX_UPLOAD_MB", "nan"),
        ("TOKEN_TTL_SECONDS", "1.5"),
        ("CLEANUP_INTERVAL_SECONDS", "-3"),
        ("STORAGE_LIMIT_MB", "lots"),
        ("DATABASE_URL", "mysql://x"),
        ("HOST", "not a host!"),
        ("HOST", "http://127.0.0.1"),
        ("HOST", "127.0.0.1:8000"),
        ("HOST_ID", "two words"),
        ("HOST_TIMEOUT_SECONDS", "0"),
        ("DATABASE_URL", "postgres://"),
        ("MAX_DURATION_SECONDS", "0"),
        ("MAX_DURATION_SECONDS", "5 min"),
        ("STORAGE_URL", "https://bucket.s3.amazonaws.com"),
        ("STORAGE_URL", "s3://UPPER"),
        ("STORAGE_URL", "s3://b"),
        ("STORAGE_URL", "s3://bucket/../escape"),
        ("STORAGE_URL", "s3://bucket/a//b"),
        ("DOWNLOADS_PER_CLIENT", "0"),
        ("MIN_DOWNLOAD_KBPS", "fast"),
        ("SLOW_DOWNLOAD_SECONDS", "0"),
        ("WEBHOOK_SECRET", "plain-secret"),
        ("WEBHOOK_SECRET", "whsec_not base64!"),
        ("WEBHOOK_SECRET", "whsec_c2hvcnQ="),  # 5 bytes
        ("WEBHOOK_RETRY_SECONDS", "5,soon"),
        ("WEBHOOK_RETRY_SECONDS", "5,,30"),
        ("WEBHOOK_RETRY_SECONDS", "0"),
        ("WEBHOOK_RETRY_SECONDS", "inf"),
        ("WEBHOOK_RETRY_SECONDS", ",".join(["1"] * 21)),
        ("WEBHOOK_ALLOW_PRIVATE", "yes please"),
        ("UPLOAD_TTL_HOURS", "0"),
        ("UPLOAD_TTL_HOURS", "a day"),
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_webhook_settings_are_parsed_and_a_secret_is_never_echoed():
    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    s = load_settings({"WEBHOOK_SECRET": secret, "WEBHOOK_RETRY_SECONDS": "0.2, 1,90", "WEBHOOK_ALLOW_PRIVATE": "1"})
    assert (s.webhook_secret, s.webhook_retry_seconds, s.webhook_allow_private) == (secret, (0.2, 1.0, 90.0), True)
    assert Settings.from_json(s.to_json()) == s
    defaults = load_settings({})
    assert defaults.webhook_secret is None and not defaults.webhook_allow_private
    assert defaults.webhook_retry_seconds == (5, 30, 120, 600, 1800)
    assert load_settings({"WEBHOOK_RETRY_SECONDS": "none"}).webhook_retry_seconds == ()
    with pytest.raises(SettingsError) as refused:
        load_settings({"WEBHOOK_SECRET": secret[:20] + "!" + secret[21:]})
    assert secret[6:20] not in str(refused.value)


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "app:app"],
        [sys.executable, "app.py"],
    ],
)
def test_bad_value_stops_start_up_with_one_line(command, tmp_path):
    env = {**os.environ, "ENCODE_WORKERS": "abc", "DATA_DIR": str(tmp_path)}
    r = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    lines = [line for line in (r.stderr + r.stdout).splitlines() if line.strip()]
    assert len(lines) == 1 and "ENCODE_WORKERS" in lines[0], lines


def test_storage_url_names_a_bucket_and_a_prefix():
    from refresher.storage import open_storage

    assert load_settings({}).storage_url is None
    for url, prefix in (("s3://my-bucket", ""), ("s3://my-bucket/", ""), ("s3://my.bucket-2/team/ads/", "team/ads/")):
        storage = open_storage(Path("/nonexistent"), load_settings({"STORAGE_URL": url}).storage_url)
        assert storage.bucket == url.split("/")[2] and storage.prefix == prefix


def test_database_url_takes_what_platforms_hand_out():
    for url in ("postgres://u:p@db.example:5432/app", "postgresql://u@/app?host=/run/pg", "sqlite:////srv/x.db"):
        assert load_settings({"DATABASE_URL": url}).database == url
    with pytest.raises(SettingsError) as raised:
        load_settings({"DATABASE_URL": "mysql://u:secret@db/app"})
    assert "secret" not in str(raised.value), "a password is never echoed"


def test_host_id_defaults_to_the_platform_s_name_for_the_process():
    assert load_settings({"DYNO": "worker.2"}).host_id == "worker.2"
    assert load_settings({"DYNO": "worker.2", "HOST_ID": "encoder-a"}).host_id == "encoder-a"
    assert load_settings({}).host_id
