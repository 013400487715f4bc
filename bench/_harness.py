"""Shared pieces of the benchmarks: test media made with lavfi, a real gunicorn
server on a free port, and small statistics helpers."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from refresher.media.ffmpeg import resolve_binary

ROOT = Path(__file__).resolve().parent.parent

FFMPEG = resolve_binary(os.environ.get("FFMPEG_BINARY"))
PASSWORD = "bench-password"


def work_dir(prefix: str) -> Path:
    """A temporary folder, removed when the script ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def make_clip(folder: Path, name: str, size: str, seconds: float, audio: bool = True) -> Path:
    path = folder / name
    if path.exists():
        return path
    args = [
        FFMPEG,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate=30:duration={seconds}",
    ]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac", "-shortest"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL)
    return path


class Server:
    """A real gunicorn, as the Procfile starts it."""

    def __init__(self, data_dir: Path | None = None, root: Path = ROOT, **env):
        self.root = root  # the checkout whose code runs
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # A folder of its own is removed when the server stops; one passed in is kept.
        self.own_data_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="refresher-bench-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATA_DIR": str(self.data_dir),
            "AUTH_PASSWORD": PASSWORD,
            **{k: str(v) for k, v in env.items()},
        }
        self.session = requests.Session()

    def __enter__(self) -> Server:
        self.log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "app:app"],
            cwd=self.root,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.session.get(self.url + "/api/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("the server did not start; see " + str(self.data_dir / "server.log"))
        token = self.session.post(self.url + "/api/auth", json={"password": PASSWORD}).json()["token"]
        self.session.headers["Authorization"] = f"Bearer {token}"
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
        if self.own_data_dir and exc[0] is None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def submit(self, paths, variations: int, **fields) -> str:
        files = [("videos", (Path(p).name, open(p, "rb"), "video/mp4")) for p in paths]
        r = self.session.post(self.url + "/api/jobs", files=files, data={"variations": variations, **fields})
        r.raise_for_status()
        return r.json()["jobId"]

    def job(self, job_id: str) -> dict:
        return self.session.get(f"{self.url}/api/jobs/{job_id}").json()

    def wait(self, job_id: str, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        raise RuntimeError(f"job {job_id} did not finish")


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return (
        f"median {statistics.median(ordered) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms   "
        f"max {ordered[-1] * 1000:7.1f} ms   (n={len(ordered)})"
    )


class Postgres:
    """A throwaway PostgreSQL cluster on a unix socket (no TCP port), removed
    when the script ends. PostgreSQL refuses to run as root, so as root it
    runs as the `postgres` user that Debian's package creates, in a folder
    that user can reach (not a private temporary folder of root's)."""

    def __init__(self):
        found = shutil.which("pg_ctl") or next(
            iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)), None
        )
        if found is None:
            raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin_dir = Path(found).resolve().parent
        self.user = "postgres" if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="refresher-bench-pg-", dir="/tmp" if self.user else None))
        if self.user:
            shutil.chown(self.folder, user=self.user)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)

    def __enter__(self) -> Postgres:
        data = self.folder / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        options = (
            f"-k {self.folder} -c listen_addresses='' -p {self.port} -c fsync=off "
            f"-c synchronous_commit=off -c max_connections=300"
        )
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")
        return self

    def new_database(self, name: str) -> str:
        """A fresh database; its URL."""
        import psycopg

        with psycopg.connect(
            host=str(self.folder), port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@/{name}?host={self.folder}&port={self.port}"

    def __exit__(self, *exc) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class MotoS3:
    """moto's standalone S3 server on loopback, with one bucket: `env` is what
    a Server needs to keep its files there (STORAGE_URL and the AWS variables).
    An S3 protocol stand-in held in one process's memory, not a real object
    store: figures against it show what the service adds, not what a
    provider's network gives."""

    def __enter__(self) -> MotoS3:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "/moto-api/", timeout=1)
                break
            except requests.RequestException as error:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError("moto's S3 server did not start") from error
                time.sleep(0.1)
        self.aws = {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.bucket = "refresher-bench"
        self.client().create_bucket(Bucket=self.bucket)
        self.env = {"STORAGE_URL": f"s3://{self.bucket}/media", **self.aws}
        return self

    def client(self):
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            region_name="us-east-1",
        )

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
