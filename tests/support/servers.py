"""The real servers the tests, the benchmarks and the README's screenshots
start (gunicorn as the Procfile runs it, a worker host, a throwaway
PostgreSQL, moto's S3 server), each on 127.0.0.1 only, and helpers for
driving one over HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from .media import FFMPEG

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"

START_COMMANDS = {
    "gunicorn": ["-m", "gunicorn", "-c", "config/gunicorn.conf.py", "app:app"],
    "worker": ["-m", "refresher.worker"],
    "app.py": ["app.py"],
}


def run_python(args: list[str], env: dict[str, str], **options) -> subprocess.CompletedProcess:
    """`python *args` from the checkout, run to its end (a minute at most), its output kept as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        **options,
    )


def wait_until(predicate, timeout=120, interval=0.05):
    """Poll `predicate` until it returns something true; that value is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def wait_done(server, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.session.get(f"{server.url}/api/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(job)


def submit(server, paths, variations):
    files = [("videos", (Path(p).name, open(p, "rb"), "video/mp4")) for p in paths]
    r = server.session.post(f"{server.url}/api/jobs", files=files, data={"variations": str(variations)})
    assert r.status_code == 202, r.text
    return r.json()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_tagged(tag: str) -> list[int]:
    """Pids of every live process whose environment carries `tag` (all descendants
    of a server we started inherit it, ffmpeg included)."""
    found = []
    needle = f"REFRESHER_TEST_TAG={tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    with open(f"/proc/{entry}/stat") as s:
                        if s.read().rsplit(")", 1)[1].split()[0] != "Z":
                            found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def _start(args: list[str], root: Path, env: dict[str, str], log) -> subprocess.Popen:
    """`python *args` in a session of its own (so that it can be signalled as a group), logging to `log`."""
    return subprocess.Popen(
        [sys.executable, *args], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _kill_tagged(tag: str) -> None:
    for pid in processes_tagged(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class GunicornServer:
    """A real gunicorn, as the Procfile starts it, running the code of the
    checkout `root`; its log is `log_path` (beside `data_dir` unless given).
    Usable as a context manager: started on entry, stopped on exit."""

    def __init__(self, data_dir: Path, root: Path = ROOT, log_path: Path | None = None, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tag = uuid.uuid4().hex
        self.root = root
        self.data_dir = data_dir
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path or data_dir.parent / f"gunicorn-{self.port}.log"
        self.env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATA_DIR": str(data_dir),
            "AUTH_PASSWORD": PASSWORD,
            "FFMPEG_BINARY": FFMPEG,
            "REFRESHER_TEST_TAG": self.tag,
            **{k: str(v) for k, v in env.items()},
        }
        self.session = requests.Session()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout=30):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")
        self.proc = _start(START_COMMANDS["gunicorn"], self.root, self.env, self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = self.session.get(self.url + "/api/health", timeout=2)
                if r.status_code == 200:
                    break
                # up, and rightly degraded: an HTTP-only server with no worker host (yet)
                if self.env.get("ENCODE_WORKERS") == "0" and r.json().get("supervisor") == "not running":
                    break
            except Exception:
                pass
            if self.proc.poll() is not None:
                raise AssertionError("gunicorn exited:\n" + self.log_text())
            time.sleep(0.1)
        else:
            raise AssertionError("gunicorn did not become healthy:\n" + self.log_text())
        if self.env["AUTH_PASSWORD"]:
            token = self.session.post(self.url + "/api/auth", json={"password": self.env["AUTH_PASSWORD"]}).json()
            self.session.headers["Authorization"] = f"Bearer {token['token']}"
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30) -> float:
        started = time.monotonic()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return time.monotonic() - started

    def leftovers(self, timeout=20.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = processes_tagged(self.tag)
            if not pids:
                return []
            time.sleep(0.1)
        return processes_tagged(self.tag)

    def kill_leftovers(self):
        _kill_tagged(self.tag)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(timeout=40)
        self.kill_leftovers()

    # --- its API, for scripts that only need it to work ---

    def submit(self, paths, variations: int, **fields) -> str:
        """A job of `paths`; its id."""
        files = [("videos", (Path(p).name, open(p, "rb"), "video/mp4")) for p in paths]
        r = self.session.post(self.url + "/api/jobs", files=files, data={"variations": variations, **fields})
        r.raise_for_status()
        return r.json()["jobId"]

    def job(self, job_id: str) -> dict:
        return self.session.get(f"{self.url}/api/jobs/{job_id}").json()

    def wait(self, job_id: str, timeout: float = 600) -> dict:
        """The job once it has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        raise RuntimeError(f"job {job_id} did not finish")


class WorkerProcess:
    """`python -m refresher.worker`, as the Procfile's worker line runs it,
    logging to `log_dir`. Usable as a context manager."""

    def __init__(self, data_dir: Path, log_dir: Path, root: Path = ROOT, **env):
        self.tag = uuid.uuid4().hex
        self.root = root
        self.host_id = env["HOST_ID"]
        self.log_path = log_dir / f"worker-{self.host_id}.log"
        self.env = {
            **os.environ,
            "DATA_DIR": str(data_dir),
            "AUTH_PASSWORD": PASSWORD,
            "FFMPEG_BINARY": FFMPEG,
            "REFRESHER_TEST_TAG": self.tag,
            **{k: str(v) for k, v in env.items()},
        }
        self.proc: subprocess.Popen | None = None

    def start(self, store=None) -> WorkerProcess:
        """Started; with `store`, once it has reported in as a live host."""
        self.log = open(self.log_path, "ab")
        self.proc = _start(START_COMMANDS["worker"], self.root, self.env, self.log)
        if store is not None:
            wait_until(
                lambda: (
                    any(h["id"] == self.host_id for h in store.live_hosts(time.time(), 5))
                    or self.proc.poll() is not None
                ),
                timeout=30,
            )
            assert self.proc.poll() is None, self.log_text()
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        _kill_tagged(self.tag)
        self.log.close()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(timeout=40)


def postgres_bin() -> Path | None:
    """Where PostgreSQL's server programs are (Debian's keeps them out of PATH)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


class PostgresCluster:
    """initdb + pg_ctl in a temporary folder, on a unix socket only (no TCP
    port), as an unprivileged user: PostgreSQL refuses to run as root, so as
    root it runs as the `postgres` user the Debian package creates, in a
    folder that user can reach (not a private temporary folder of root's).
    Usable as a context manager."""

    def __init__(self, bin_dir: Path | None = None):
        bin_dir = bin_dir or postgres_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin_dir = bin_dir
        self.user = "postgres" if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="refresher-pg-", dir="/tmp" if self.user else None))
        self.socket_dir = self.folder
        self.port = free_port()
        if self.user:
            shutil.chown(self.folder, user=self.user)

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        r = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {r.stdout}{r.stderr}")

    def start(self) -> PostgresCluster:
        data = self.folder / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        options = (
            f"-k {self.socket_dir} -c listen_addresses='' -p {self.port} -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def new_database(self, name: str | None = None) -> str:
        """A fresh, empty database (named `name`, or a new name); its URL."""
        import psycopg

        name = name or "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class MotoServer:
    """moto's standalone S3 server in a process of its own, on loopback, at
    `url`; what it prints goes to `log_path` (nowhere unless given)."""

    def __init__(self, log_path: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path

    def start(self) -> MotoServer:
        self.log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "/moto-api/", timeout=1)
                return self
            except requests.RequestException as error:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    raise RuntimeError("moto's S3 server did not start") from error
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.log_path:
            self.log.close()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
