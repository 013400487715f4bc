"""Shared fixtures: tiny real videos made with ffmpeg's lavfi sources, an app
with the supervisor embedded (a real process, a real pool, real ffmpeg), and
a real gunicorn server."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
import uuid
from pathlib import Path
from collections.abc import Callable

import pytest

from refresher.settings import Settings
from refresher.engine.control import ControlBlock
from refresher.engine.handle import SupervisorHandle
from refresher.store import Store
from refresher.webapp import create_app

from .support.media import FFMPEG, make_clip, run_ffmpeg

from .support.servers import (
    PASSWORD,
    GunicornServer,
    MotoServer,
    PostgresCluster,
    WorkerProcess,
    postgres_bin,
)

ROOT = Path(__file__).resolve().parent.parent


class Media(dict):
    """Every kind of source the service must handle, each made with lavfi the
    first time a test asks for it: once per test run, in a folder the
    pytest-xdist workers share (the first to want a clip makes it while the
    others wait on its lock; a 40 s 720p clip takes seconds to make). Tests
    read these files and never change them."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def __missing__(self, name: str) -> Path:
        made = self.folder / f"{name}.made"  # holds the clip's file name once it is whole
        with open(self.folder / f"{name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not made.exists():
                path = _MEDIA[name](self, self.folder)
                made.write_text(path.name)
            path = self.folder / made.read_text()
        self[name] = path
        return path


def _huge(m: Media, d: Path) -> Path:  # one flat frame: tiny file, enormous picture
    path = d / "huge.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=8192x4608:duration=0.1", "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))  # fmt: skip
    return path


def _rotated(m: Media, d: Path) -> Path:
    hevc = make_clip(
        d / "hevc.mov", codec="libx265", audio=False, extra=("-tag:v", "hvc1", "-x265-params", "log-level=none")
    )
    run_ffmpeg("-display_rotation", "90", "-i", str(hevc), "-c", "copy", str(d / "rotated.mov"))
    return d / "rotated.mov"


def _audio_only(m: Media, d: Path) -> Path:
    run_ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(d / "song.mp4"))
    return d / "song.mp4"


def _mkv(m: Media, d: Path) -> Path:
    run_ffmpeg("-i", str(m["clip"]), "-c", "copy", "-f", "matroska", str(d / "clip.mkv"))
    return d / "clip.mkv"


def _written(name: str, content) -> Callable[[Media, Path], Path]:
    def make(m: Media, d: Path) -> Path:
        path = d / name
        path.write_bytes(content(m))
        return path

    return make


def _endless(m: Media, d: Path) -> Path:  # an hour of a 16×16 still: 95 KB, hours of CPU at 1080p
    run_ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=16x16:rate=1:duration=3600", "-c:v", "libx264",
            "-g", "3600", "-pix_fmt", "yuv420p", str(d / "endless.mp4"))  # fmt: skip
    return d / "endless.mp4"


def _still(m: Media, d: Path) -> Path:  # a still 1080p60 picture with sound: 50 KB for 4 s
    run_ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=1920x1080:rate=60:duration=4", "-f", "lavfi", "-i",
            "sine=duration=4", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-shortest", str(d / "still.mp4"))  # fmt: skip
    return d / "still.mp4"


_MEDIA: dict[str, Callable[[Media, Path], Path]] = {
    "clip": lambda m, d: make_clip(d / "clip.mp4"),
    "clip2": lambda m, d: make_clip(d / "second clip.mp4", size="320x180"),
    "vertical": lambda m, d: make_clip(d / "vertical.mp4", size="240x320", audio=False),
    "odd": lambda m, d: make_clip(d / "odd.mp4", size="321x241", pix_fmt="yuv444p"),
    "long": lambda m, d: make_clip(d / "long.mp4", size="1280x720", seconds=10),
    # encodes for a few seconds: long enough to cancel in the middle
    "slow": lambda m, d: make_clip(d / "slow.mp4", size="1280x720", seconds=40, extra=("-g", "300")),
    "rotated": _rotated,
    "not_video": _written("notes.mp4", lambda m: b"this is not a video\n" * 100),
    "audio_only": _audio_only,
    "huge": _huge,
    "mkv": _mkv,
    "truncated": _written("truncated.mp4", lambda m: m["clip"].read_bytes()[:2000]),
    "endless": _endless,
    "still": _still,
}


@pytest.fixture(scope="session")
def media(tmp_path_factory, worker_id) -> Media:
    if worker_id == "master":  # (no xdist)
        return Media(tmp_path_factory.mktemp("media"))
    return Media(tmp_path_factory.getbasetemp().parent / "media")


@pytest.fixture(scope="session")
def frame_over_8k(tmp_path_factory) -> dict[str, Path]:
    """MJPEG MOVs of 160×120 frames but one of 7700×4400, which their stream
    header does not announce: at 3 s ("early", within what a probe reads) and
    at 10 s ("late", past it)."""
    d = tmp_path_factory.mktemp("frame-over-8k")
    small, large = d / "small.jpg", d / "large.jpg"
    run_ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=160x120", "-frames:v", "1", "-update", "1", str(small))
    run_ffmpeg(
        "-f", "lavfi", "-i", "color=c=gray:size=7700x4400", "-frames:v", "1", "-q:v", "31", "-update", "1", str(large)
    )
    made = {}
    for name, before in (("early", 3), ("late", 10)):
        frames = d / name
        frames.mkdir()
        for index in range(before + 5):
            (frames / f"{index:03d}.jpg").write_bytes((large if index == before else small).read_bytes())
        made[name] = d / f"{name}.mov"
        run_ffmpeg("-framerate", "1", "-i", str(frames / "%03d.jpg"), "-c:v", "copy", "-f", "mov", str(made[name]))
    return made


def make_settings(data_dir: Path, **overrides) -> Settings:
    values = dict(
        data_dir=data_dir,
        auth_password=PASSWORD,
        token_secret="test-secret",
        encode_workers=2,
        cleanup_interval_seconds=3600,
        ffmpeg_binary=FFMPEG,
    )
    values.update(overrides)
    return Settings(**values)


def sql(store, statement: str, *params) -> list[tuple]:
    """Run one SQL statement on a store's database (for checks the API does
    not offer); the rows it returned."""
    with store.writing() as conn:
        result = conn.exec_driver_sql(statement, params)
        return [tuple(r) for r in result] if result.returns_rows else []


@pytest.fixture
def app(tmp_path):
    """An app without a supervisor: for what HTTP alone decides."""
    return create_app(make_settings(tmp_path / "data"))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def small_disk(tmp_path):
    """mount(size_mb) → the path of a fresh tmpfs of that size (needs root)."""
    mounted = []

    def mount(size_mb: int) -> Path:
        point = tmp_path / f"small-disk-{len(mounted)}"
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(point)], capture_output=True)
        if r.returncode != 0:
            pytest.skip("mounting a small tmpfs needs root: " + r.stderr.decode().strip())
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


class EmbeddedService:
    """The app plus a real supervisor process, as `python app.py` runs them."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.control = ControlBlock.create(settings.data_dir / "run")
        self.app = create_app(settings, self.control)
        self.store = self.app.extensions["refresher"].store
        self.supervisor = SupervisorHandle(settings, self.control).start()
        # waits on conditions are generous: they end as soon as the condition holds, and a shared
        # machine under load may take minutes where a quiet one takes seconds
        assert self.supervisor.wait_ready(timeout=120), "the supervisor did not start"
        self.client = self.app.test_client()
        token = self.client.post("/api/auth", json={"password": PASSWORD}).get_json()["token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def _call(self, method, url, headers=None, **kw):
        return getattr(self.client, method)(url, headers={**self.headers, **(headers or {})}, **kw)

    def get(self, url, **kw):
        return self._call("get", url, **kw)

    def post(self, url, **kw):
        return self._call("post", url, **kw)

    def delete(self, url, **kw):
        return self._call("delete", url, **kw)

    def submit(self, paths, variations=3, seed=None, expect=202):
        data = {"videos": [(open(p, "rb"), Path(p).name) for p in paths], "variations": str(variations)}
        if seed is not None:
            data["seed"] = seed
        r = self.post("/api/jobs", data=data, content_type="multipart/form-data")
        assert r.status_code == expect, r.get_json()
        return r.get_json()

    def wait(self, job_id, statuses=("completed", "failed", "cancelled"), timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/api/jobs/{job_id}").get_json()
            if job["status"] in statuses:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not reach {statuses}: {job}")

    def close(self):
        self.supervisor.stop()
        self.control.remove()


@pytest.fixture
def service(tmp_path):
    svc = EmbeddedService(make_settings(tmp_path / "data"))
    yield svc
    svc.close()


@pytest.fixture
def make_service(tmp_path):
    """Build a service with custom settings."""
    made = []

    def make(**overrides):
        svc = EmbeddedService(make_settings(tmp_path / f"data{len(made)}", **overrides))
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


# --- the fast lane -----------------------------------------------------------------------
# `pytest -m "not e2e"` leaves out every test that starts a real gunicorn, a
# browser, a cluster of hosts, an S3 server, an install or a benchmark, kills
# and restarts whole processes, or fuzzes every operation, and the few tests
# named in E2E_TESTS (the service's start commands run as processes, and
# seconds of 720p encoding): what is left runs the app
# in-process with a real supervisor, real ffmpeg and real databases, cancels
# included (a queued job, and the q → SIGTERM → SIGKILL ladder).
E2E_FIXTURES = {"gunicorn_server", "browser", "page", "cluster", "installed"}
E2E_MODULES = {
    "test_benchmarks",
    "test_package",
    "test_new_user",
    "test_many_hosts",
    "test_client",
    "test_slow_clients",
    "test_gunicorn",
    "test_browser",
    "test_layers",
    "test_quality",
    "test_object_storage",  # a real S3 server
    "test_resilience",  # whole processes killed and restarted
    "test_openapi",  # every operation fuzzed on a live service
}
E2E_TESTS = (
    # the start commands (app.py, gunicorn, flask) run as processes of their own
    "test_ffmpeg_binary.py::test_start_up_refuses_",
    "test_tokens.py::test_cli_through_the_real_flask_command",
    "test_store.py::test_processes_starting_together_all_migrate_a_fresh_database",
    # a 720p encode kept running for seconds, or several one after another
    "test_again.py::test_resume_makes_what_the_cancel_left_unmade",
    "test_encoding.py::test_progress_rises_smoothly_and_never_goes_back",
    "test_encoding.py::test_within_a_job_the_costliest_encode_starts_first",
    "test_encoding.py::test_jobs_take_turns_so_a_small_job_is_not_stuck_behind_a_big_one",
    "test_cancel.py::test_cancel_two_variations_running_in_parallel",
    "test_cancel.py::test_cancel_mid_job_keeps_finished_variations",
    "test_cancel.py::test_cancel_one_job_leaves_the_other_running",
    "test_lifecycle.py::test_job_queued_past_expiry_fails",
    "test_hostile.py::test_a_full_queue_is_refused_with_503",
    "test_results.py::test_names_shown_and_zipped_are_visible_and_portable",
    "test_results.py::test_events_stream_until_final_status",
)


# The longest tests first, so that on four workers none of them starts near
# the end while the others sit idle (pytest-xdist hands tests out in this
# order). Measured with --durations; the rest keep their order after these.
LONGEST_FIRST = [
    "test_package.py::test_the_wheel_holds_everything_and_runs_from_an_empty_directory",
    "test_new_user.py::",
    "test_benchmarks.py::test_benchmark_runs[resilience.py]",
    "test_many_hosts.py::test_a_killed_host_loses_nothing_and_the_other_finishes_the_job",
    "test_benchmarks.py::test_benchmark_runs[server_cost.py]",
    "test_benchmarks.py::test_benchmark_runs[status_latency.py]",
    "test_openapi.py::test_every_operation_answers_as_described",
    "test_resilience.py::test_sigterm_mid_job_then_restart_resumes",
    "test_object_storage.py::test_a_cancel_keeps_stored_outputs_and_no_partial_reaches_the_bucket",
    "test_object_storage.py::test_a_worker_killed_and_restarted_on_an_empty_disk_loses_nothing",
    "test_resilience.py::test_sigkill_of_the_whole_server_then_restart_resumes",
    "test_benchmarks.py::test_benchmark_runs[cluster.py]",
    "test_resilience.py::test_supervisor_killed_is_replaced_and_the_job_completes",
    "test_benchmarks.py::test_benchmark_runs[object_storage.py]",
    # and the longest of the fast lane
    "test_again.py::test_resume_makes_what_the_cancel_left_unmade",
    "test_store.py::test_processes_starting_together_all_migrate_a_fresh_database",
    "test_cancel.py::test_cancel_queued_job_is_immediate_and_never_starts_ffmpeg",
    "test_encoding.py::test_progress_rises_smoothly_and_never_goes_back",
    "test_results.py::test_events_stream_until_final_status",
    "test_again.py::test_a_job_in_the_wrong_state_or_without_its_sources_is_refused",
    "test_lifecycle.py::test_job_that_cannot_fit_fails_with_a_clear_error",
]


def _longest_first(item) -> int:
    name = item.nodeid.rsplit("/", 1)[-1]
    for rank, prefix in enumerate(LONGEST_FIRST):
        if name.startswith(prefix):
            return rank
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if (
            E2E_FIXTURES & set(getattr(item, "fixturenames", ()))
            or item.module.__name__.split(".")[-1] in E2E_MODULES
            or item.nodeid.rsplit("/", 1)[-1].startswith(E2E_TESTS)
        ):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=_longest_first)  # stable: the others keep their order


# --- a real gunicorn ------------------------------------------------------------------


@pytest.fixture
def gunicorn_server(tmp_path):
    """start(*gunicorn_args, **env) → a started GunicornServer on 127.0.0.1."""
    servers = []

    def start(*gunicorn_args, **env):
        data_dir = Path(env.pop("DATA_DIR", tmp_path / f"data{len(servers)}"))
        server = GunicornServer(data_dir, **env)
        if gunicorn_args:
            server.env["GUNICORN_CMD_ARGS"] = " ".join(gunicorn_args)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
        server.kill_leftovers()


# --- media checks ----------------------------------------------------------------------


def decode_errors(path: Path) -> str:
    """ffmpeg's complaints while decoding the whole file ('' when clean)."""
    r = subprocess.run(
        [FFMPEG, "-hide_banner", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    return r.stderr.strip() + ("" if r.returncode == 0 else f" (exit {r.returncode})")


def ffmpeg_pids_writing_under(folder: Path) -> list[int]:
    """Live ffmpeg processes whose command line names a file under `folder`."""
    found = []
    needle = str(folder).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if needle in cmdline and b"ffmpeg" in cmdline.split(b"\0")[0] and state != "Z":
            found.append(int(entry))
    return found


def video_md5(path: Path) -> str:
    r = subprocess.run(
        [FFMPEG, "-hide_banner", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "md5", "-"],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return r.stdout.strip()


# --- a throwaway PostgreSQL ---------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL cluster (skipped only where PostgreSQL is not
    installed and this is not CI: CI installs it and must run these tests)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    cluster = PostgresCluster(bin_dir).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A fresh database's URL, once on each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """DATABASE_URL for a service under test, once on each engine: None (the
    default, SQLite in its DATA_DIR), then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").new_database()


# --- many hosts: worker processes and a web process on one PostgreSQL -----------------------


@pytest.fixture
def cluster(postgres, tmp_path):
    """start(workers=2, disks="shared", **env) → (web server, [worker processes], store).
    disks="own": each process gets a DATA_DIR of its own (hosts that share no disk)."""
    made = []

    def start(workers: int = 2, disks: str = "shared", **env):
        url = postgres.new_database()
        store = Store(url)
        store.migrate()
        common = {"DATABASE_URL": url, "HOST_TIMEOUT_SECONDS": 3, **env}

        def data_dir(name: str) -> Path:
            folder = tmp_path / (name if disks == "own" else "shared")
            folder.mkdir(exist_ok=True)
            return folder

        hosts = [
            WorkerProcess(data_dir(f"host{i + 1}"), tmp_path, HOST_ID=f"worker.{i + 1}", ENCODE_WORKERS=1, **common)
            for i in range(workers)
        ]
        for host in hosts:
            made.append(host)
            host.start(store)
        web = GunicornServer(data_dir("web"), ENCODE_WORKERS=0, **common)
        made.append(web)
        web.start()
        return web, hosts, store

    yield start
    for process in made:
        process.stop()
        if isinstance(process, GunicornServer):
            process.kill_leftovers()


def submit_to(web, path: Path, variations: int) -> str:
    with open(path, "rb") as f:
        r = web.session.post(
            f"{web.url}/api/jobs", files=[("videos", (path.name, f, "video/mp4"))], data={"variations": str(variations)}
        )
    assert r.status_code == 202, r.text
    return r.json()["jobId"]


def job_of(web, job_id: str) -> dict:
    return web.session.get(f"{web.url}/api/jobs/{job_id}").json()


# --- S3-compatible object storage -----------------------------------------------------------


class S3Endpoint:
    """An S3 endpoint over real HTTP, and what a process needs to reach it:
    the standard AWS variables (`env`). Each test gets a bucket of its own."""

    def __init__(self, url: str, access_key: str, secret_key: str, region: str, enforces_expiry: bool = True):
        self.url, self.access_key, self.secret_key, self.region = url, access_key, secret_key, region
        self.enforces_expiry = enforces_expiry  # of presigned links (moto's server does not)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def client(self):
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def new_bucket(self) -> str:
        return self.new_bucket_named(f"refresher-test-{uuid.uuid4().hex[:16]}")

    def new_bucket_named(self, name: str) -> str:
        client = self.client()
        if self.region == "us-east-1":
            client.create_bucket(Bucket=name)
        else:
            client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in the bucket under `prefix`."""
        found = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += [item["Key"] for item in page.get("Contents", [])]
        return sorted(found)

    def drop_bucket(self, bucket: str) -> None:
        client = self.client()
        for _ in range(0, 10**9, 1000):
            keys = self.keys(bucket)[:1000]
            if not keys:
                break
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
        client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    """moto's standalone S3 server in a process of its own, on loopback."""
    with MotoServer(tmp_path_factory.mktemp("moto") / "server.log") as server:
        yield S3Endpoint(server.url, "testing", "testing", "us-east-1", enforces_expiry=False)


@pytest.fixture(params=["moto", "given"])
def s3(request) -> S3Endpoint:
    """Once against moto's server, and once against the S3-compatible
    endpoint given in TEST_S3_ENDPOINT_URL (with TEST_S3_ACCESS_KEY_ID,
    TEST_S3_SECRET_ACCESS_KEY, TEST_S3_REGION), e.g. a local MinIO: skipped
    when none is given."""
    if request.param == "moto":
        return request.getfixturevalue("moto_s3")
    url = os.environ.get("TEST_S3_ENDPOINT_URL")
    if not url:
        pytest.skip("no S3-compatible endpoint given in TEST_S3_ENDPOINT_URL")
    return S3Endpoint(
        url,
        os.environ.get("TEST_S3_ACCESS_KEY_ID", ""),
        os.environ.get("TEST_S3_SECRET_ACCESS_KEY", ""),
        os.environ.get("TEST_S3_REGION", "us-east-1"),
    )


@pytest.fixture
def bucket(s3, monkeypatch):
    """A fresh bucket (removed after), and this process's AWS variables
    pointing at its endpoint (processes started from here inherit them)."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    name = s3.new_bucket()
    yield name
    s3.drop_bucket(name)


# --- a real browser ------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install -r requirements-dev.txt")
    if not CHROMIUM.exists():
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class PageProblems:
    """What the page complained about: script errors, CSP violations, alert() calls."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"script error: {error}"))
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def _console(self, message):
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.errors.append(f"console: {message.text}")

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.problems = PageProblems(page)
    yield page
    context.close()
    assert page.problems.errors == [], page.problems.errors
    assert page.problems.dialogs == [], "nothing may call alert()/confirm()"
