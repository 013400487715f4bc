"""Shared pieces of the benchmarks: test media made with lavfi and a real
gunicorn server on a free port (both as the tests make them, in
tests/support), and small statistics helpers."""

from __future__ import annotations

import atexit
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from tests.support import media
from tests.support.media import FFMPEG
from tests.support.servers import ROOT, GunicornServer, MotoServer, PostgresCluster

__all__ = ["FFMPEG", "PASSWORD", "ROOT", "MotoS3", "Postgres", "Server", "make_clip", "summary", "work_dir"]

PASSWORD = "bench-password"


def work_dir(prefix: str) -> Path:
    """A temporary folder, removed when the script ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def make_clip(folder: Path, name: str, size: str, seconds: float, audio: bool = True, cancelled: bool = False) -> Path:
    """A clip of lavfi's test pattern in `folder` (made once; the same name
    gives the same file). BENCH_CLIP_SIZE, when set, is the size of every
    clip but those whose encodes are `cancelled` (which must still be running
    when the cancel comes): the test suite's runs of each benchmark, which
    only check that it runs, use it to spend less CPU on encodes."""
    path = folder / name
    size = size if cancelled else os.environ.get("BENCH_CLIP_SIZE") or size
    return path if path.exists() else media.make_clip(path, size, seconds, audio=audio, preset="veryfast")


class Server(GunicornServer):
    """A real gunicorn, as the Procfile starts it, with a DATA_DIR of its own
    (removed when it stops) unless one is given (kept), and its log there."""

    def __init__(self, data_dir: Path | None = None, root: Path = ROOT, **env):
        self.own_data_dir = data_dir is None
        data_dir = data_dir or Path(tempfile.mkdtemp(prefix="refresher-bench-"))
        data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(data_dir, root, data_dir / "server.log", AUTH_PASSWORD=PASSWORD, **env)

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if self.own_data_dir and exc[0] is None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return (
        f"median {statistics.median(ordered) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms   "
        f"max {ordered[-1] * 1000:7.1f} ms   (n={len(ordered)})"
    )


class Postgres(PostgresCluster):
    """A throwaway PostgreSQL cluster on a unix socket (no TCP port), removed
    when the script ends; it refuses to start a script where PostgreSQL is
    not installed."""

    def __init__(self):
        try:
            super().__init__()
        except RuntimeError as error:
            raise SystemExit(str(error)) from error


class MotoS3(MotoServer):
    """moto's standalone S3 server on loopback, with one bucket: `env` is what
    a Server needs to keep its files there (STORAGE_URL and the AWS variables).
    An S3 protocol stand-in held in one process's memory, not a real object
    store: figures against it show what the service adds, not what a
    provider's network gives."""

    def __enter__(self) -> MotoS3:
        self.start()
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
