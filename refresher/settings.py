"""Every setting of the service, read from the environment (12-factor).

A value that is set but cannot be parsed stops start-up with one line naming
the variable; it is never silently replaced by the default.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting has a value the service cannot use. The message names it."""


@dataclass(frozen=True)
class Settings:
    port: int = 8000
    host: str = "0.0.0.0"
    web_concurrency: int = 2
    data_dir: Path = Path("./data")
    auth_password: str | None = None
    token_secret: str | None = None
    token_ttl_seconds: int = 86400
    encode_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_upload_mb: float = 500
    job_ttl_hours: float = 24
    storage_limit_mb: float = 3072
    max_duration_seconds: float = 300
    max_resolution: tuple[int, int] = (4096, 2160)  # a source's picture, either way round
    max_frame_rate: float = 120
    cleanup_interval_seconds: float = 300
    ffmpeg_binary: str | None = None
    database_url: str | None = None
    stall_seconds: float = 120
    max_queued_jobs: int = 100
    cors_origins: tuple[str, ...] = ()
    trust_proxy_hops: int = 0
    host_id: str = field(default_factory=lambda: os.environ.get("DYNO") or socket.gethostname())
    host_timeout_seconds: float = 30
    cancel_db_poll_seconds: float | None = None  # None: every supervisor loop on SQLite, 1 s on PostgreSQL
    web_encode_workers: int | None = None
    storage_url: str | None = None
    webhook_secret: str | None = None  # whsec_ + base64: signs webhooks (refresher.webhooks)
    webhook_retry_seconds: tuple[float, ...] = (5, 30, 120, 600, 1800)
    webhook_allow_private: bool = False
    log_level: str = "INFO"
    # ZIPs and outputs one token or session reads at once, per host (a browser opens at most 6 connections to one)
    downloads_per_client: int = 6
    min_download_kbps: float = 8  # a download that hands out less over SLOW_DOWNLOAD_SECONDS is cut off
    slow_download_seconds: float = 30
    upload_ttl_hours: float = 24

    def __post_init__(self):
        # A relative DATA_DIR is taken from the directory the process starts in,
        # once: every path made from it later (flask.send_file resolves a
        # relative one against the package, a supervisor runs elsewhere) is absolute.
        object.__setattr__(self, "data_dir", Path(os.path.abspath(self.data_dir)))

    @property
    def bind(self) -> str:
        """host:port as gunicorn takes it ([::1]:8000 for an IPv6 address)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def db_path(self) -> Path | None:
        """The SQLite file, when the store is SQLite."""
        if self.database_url is None:
            return self.data_dir / "refresher.db"
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url[len("sqlite:///") :])
        return None

    @property
    def uses_postgres(self) -> bool:
        return bool(self.database_url and not self.database_url.startswith("sqlite:"))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def storage_limit_bytes(self) -> int:
        return int(self.storage_limit_mb * 1024 * 1024)

    @property
    def job_ttl_seconds(self) -> float:
        return self.job_ttl_hours * 3600

    @property
    def upload_ttl_seconds(self) -> float:
        return self.upload_ttl_hours * 3600

    @property
    def database(self) -> str:
        """What the store connects to: DATABASE_URL, or SQLite in DATA_DIR."""
        return self.database_url or str(self.db_path)

    @property
    def storage_shown(self) -> str:
        """Where files live, as a log line names it (STORAGE_URL holds only a
        bucket and a prefix; credentials come from AWS_* variables, never shown)."""
        if self.storage_url:
            return f"{self.storage_url} (scratch in {self.data_dir})"
        return f"DATA_DIR {self.data_dir}"

    def for_web(self) -> Settings:
        """The settings of a web process (gunicorn, `python app.py`):
        WEB_ENCODE_WORKERS, where set, replaces ENCODE_WORKERS. Platforms give
        every process type the same variables, and there the web process
        should encode nothing while worker processes do."""
        if self.web_encode_workers is None:
            return self
        return replace(self, encode_workers=self.web_encode_workers)

    def to_json(self) -> str:
        """For handing the settings to a process the service starts itself."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["data_dir"] = str(self.data_dir)
        values["cors_origins"] = list(self.cors_origins)
        values["max_resolution"] = list(self.max_resolution)
        values["webhook_retry_seconds"] = list(self.webhook_retry_seconds)
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        values = json.loads(text)
        values["data_dir"] = Path(values["data_dir"])
        values["cors_origins"] = tuple(values["cors_origins"])
        values["max_resolution"] = tuple(values["max_resolution"])
        values["webhook_retry_seconds"] = tuple(values["webhook_retry_seconds"])
        return cls(**values)

    def with_overrides(self, **changes) -> Settings:
        if "data_dir" in changes:
            changes["data_dir"] = Path(changes["data_dir"])
        return replace(self, **changes)


def _int(name: str, raw: str, minimum: int = 1, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise SettingsError(f"{name} must be at least {minimum}{upper}, got {raw!r}")
    return value


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"{name} must be a number above 0, got {raw!r}")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(name: str, raw: str) -> str:
    value = raw.strip().upper()
    if value not in LOG_LEVELS:
        raise SettingsError(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return value


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise SettingsError(f"{name} is set but empty")
    return raw


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _host(name: str, raw: str) -> str:
    value = raw.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise SettingsError(
            f"{name} must be an IP address or a host name such as 127.0.0.1, :: or localhost, got {raw!r}"
        )
    return value


def _host_id(name: str, raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}", value):
        raise SettingsError(f"{name} must be 1 to 100 letters, digits, '.', '_', ':' or '-', got {raw!r}")
    return value


def _database_url(name: str, raw: str) -> str:
    """postgres:// (what platforms hand out), postgresql://, or sqlite:///path."""
    value = raw.strip()
    if value.startswith(("postgres://", "postgresql://")):
        rest = value.split("://", 1)[1]
        if not rest or rest.startswith("?") and "host=" not in rest:
            raise SettingsError(f"{name} must name a server, e.g. postgres://user:password@host:5432/db")
        return value
    if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        return "sqlite:///" + os.path.abspath(value[len("sqlite:///") :])  # relative: to where it starts
    shown = value.split("@")[-1] if "@" in value else value  # never echo a password
    raise SettingsError(f"{name} must be a postgres://, postgresql:// or sqlite:/// URL, got {shown!r}")


_S3_URL = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")


def parse_storage_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`; ValueError naming the problem."""
    match = _S3_URL.match(url.strip())
    if not match:
        raise ValueError(
            f"must look like s3://bucket or s3://bucket/prefix "
            f"(a bucket name of 3-63 lower-case letters, digits, dots and dashes), got {url!r}"
        )
    prefix = (match.group("prefix") or "").strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError(f"the prefix must not have empty, '.' or '..' parts, got {url!r}")
    return match.group("bucket"), prefix


def _storage_url(name: str, raw: str) -> str:
    """s3://bucket or s3://bucket/prefix (object storage); unset means DATA_DIR."""
    try:
        parse_storage_url(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} {exc}") from None
    return raw.strip()


def _resolution(name: str, raw: str) -> tuple[int, int]:
    """WIDTHxHEIGHT, at most 8K (the decoder refuses larger pictures anyway)."""
    found = re.fullmatch(r"\s*(\d{2,5})\s*[xX×]\s*(\d{2,5})\s*", raw)
    if not found:
        raise SettingsError(f"{name} must be WIDTHxHEIGHT, e.g. 3840x2160, got {raw!r}")
    width, height = int(found.group(1)), int(found.group(2))
    if max(width, height) > 7680 or min(width, height) > 4320 or min(width, height) < 16:
        raise SettingsError(f"{name} must be between 16x16 and 7680x4320 (8K), got {raw!r}")
    return width, height


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise SettingsError(f"{name} must list origins like https://example.com, got {origin!r}")
    return origins


WEBHOOK_SECRET_BYTES = (24, 64)  # the Standard Webhooks recommendation
MAX_WEBHOOK_RETRIES = 20


def _webhook_secret(name: str, raw: str) -> str:
    """whsec_ and 24 to 64 bytes in base64, as Standard Webhooks keys are written.
    The value is never echoed: it is a secret."""
    value = raw.strip()
    low, high = WEBHOOK_SECRET_BYTES
    example = "e.g. whsec_$(openssl rand -base64 32)"
    if not value.startswith("whsec_"):
        raise SettingsError(f"{name} must start with whsec_ followed by a base64 key ({example})")
    try:
        key = base64.b64decode(value[len("whsec_") :], validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(f"{name} must be whsec_ followed by base64 ({example}); its key is not base64") from None
    if not low <= len(key) <= high:
        raise SettingsError(f"{name} must hold a key of {low} to {high} bytes ({example}); it holds {len(key)}")
    return value


def _retry_delays(name: str, raw: str) -> tuple[float, ...]:
    """Seconds to wait before each retry, e.g. 5,30,120; "none" for no retries."""
    if raw.strip().lower() == "none":
        return ()
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) > MAX_WEBHOOK_RETRIES:
        raise SettingsError(f"{name} may list at most {MAX_WEBHOOK_RETRIES} delays, got {len(parts)}")
    delays = []
    for part in parts:
        try:
            delay = float(part)
        except ValueError:
            delay = math.nan
        if not math.isfinite(delay) or not 0 < delay <= 86400:
            raise SettingsError(
                f"{name} must be delays in seconds above 0 and at most 86400, separated by commas "
                f"(e.g. 5,30,120,600,1800), or none; got {raw!r}"
            )
        delays.append(delay)
    return tuple(delays)


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("0", "1", "true", "false"):
        raise SettingsError(f"{name} must be 1 (on) or 0 (off), got {raw!r}")
    return value in ("1", "true")


_PARSERS: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "PORT": ("port", lambda n, v: _int(n, v, 1, 65535)),
    "HOST": ("host", _host),
    "WEB_CONCURRENCY": ("web_concurrency", lambda n, v: _int(n, v, 1, 64)),
    "DATA_DIR": ("data_dir", lambda n, v: Path(_text(n, v))),
    "AUTH_PASSWORD": ("auth_password", _text),
    "TOKEN_SECRET": ("token_secret", _text),
    "TOKEN_TTL_SECONDS": ("token_ttl_seconds", lambda n, v: _int(n, v, 1)),
    # 0: this process serves HTTP only; worker processes elsewhere encode
    "ENCODE_WORKERS": ("encode_workers", lambda n, v: _int(n, v, 0, 64)),
    "MAX_UPLOAD_MB": ("max_upload_mb", _positive_float),
    "JOB_TTL_HOURS": ("job_ttl_hours", _positive_float),
    "STORAGE_LIMIT_MB": ("storage_limit_mb", _positive_float),
    "MAX_DURATION_SECONDS": ("max_duration_seconds", _positive_float),
    "MAX_RESOLUTION": ("max_resolution", _resolution),
    "MAX_FRAME_RATE": ("max_frame_rate", _positive_float),
    "CLEANUP_INTERVAL_SECONDS": ("cleanup_interval_seconds", _positive_float),
    "FFMPEG_BINARY": ("ffmpeg_binary", _text),
    "DATABASE_URL": ("database_url", _database_url),
    "STALL_SECONDS": ("stall_seconds", _positive_float),
    "MAX_QUEUED_JOBS": ("max_queued_jobs", lambda n, v: _int(n, v, 1)),
    "CORS_ORIGINS": ("cors_origins", _origins),
    "TRUST_PROXY_HOPS": ("trust_proxy_hops", lambda n, v: _int(n, v, 0, 5)),
    "HOST_ID": ("host_id", _host_id),
    "HOST_TIMEOUT_SECONDS": ("host_timeout_seconds", _positive_float),
    # how often a supervisor looks for cancels in the database (PostgreSQL also announces them)
    "CANCEL_DB_POLL_SECONDS": ("cancel_db_poll_seconds", _positive_float),
    # ENCODE_WORKERS for web processes only (0 where worker processes encode)
    "WEB_ENCODE_WORKERS": ("web_encode_workers", lambda n, v: _int(n, v, 0, 64)),
    "STORAGE_URL": ("storage_url", _storage_url),
    "WEBHOOK_SECRET": ("webhook_secret", _webhook_secret),
    "WEBHOOK_RETRY_SECONDS": ("webhook_retry_seconds", _retry_delays),
    "WEBHOOK_ALLOW_PRIVATE": ("webhook_allow_private", _flag),
    "LOG_LEVEL": ("log_level", _log_level),
    "DOWNLOADS_PER_CLIENT": ("downloads_per_client", lambda n, v: _int(n, v, 1, 64)),
    "MIN_DOWNLOAD_KBPS": ("min_download_kbps", _positive_float),
    "SLOW_DOWNLOAD_SECONDS": ("slow_download_seconds", _positive_float),
    # how long an unfinished resumable upload is kept (fractions allowed)
    "UPLOAD_TTL_HOURS": ("upload_ttl_hours", _positive_float),
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment; raise SettingsError on a bad value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}  # each parser gives its attribute's type
    for variable, (attribute, parse) in _PARSERS.items():
        raw = environ.get(variable)
        if raw is not None and raw != "":
            values[attribute] = parse(variable, raw)
    if "host_id" not in values:  # the platform's name for this process (Heroku: $DYNO), else the machine's
        values["host_id"] = _host_id("DYNO", environ.get("DYNO") or socket.gethostname())
    return Settings(**values)


def describe() -> list[str]:
    """The names of every setting, for documentation and tests."""
    return list(_PARSERS)
