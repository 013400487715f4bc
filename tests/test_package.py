"""The package as a team installs it: a wheel built from this checkout, put in
a fresh virtualenv with the locked dependencies, and its three commands run
from an empty directory (nothing may assume the current directory is a
checkout).

The virtualenv reaches the locked dependencies where this test run has them
installed (a .pth file), and pip checks that they are all the wheel asks
for: installing them again would cost a minute of the suite, and the
README's first command, which the new-user test runs from a fresh copy,
installs them from the lock anyway."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path

import pytest
import requests

from .conftest import ROOT
from .support.servers import free_port, processes_tagged
from .support.checkout import fresh_copy

# The install alone (pip's own timeouts allow 20 minutes) outlasted the suite's 300 s per test
# on a loaded machine, as the first test handed out while every worker starts up.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin folder of a fresh virtualenv that has the wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    source = fresh_copy(work / "source")  # a build writes beside the sources
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheels = list((work / "dist").glob("video_refresher-*.whl"))
    assert len(wheels) == 1, wheels
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    assert not any((Path(p) / "refresher").exists() for p in ours), "the checkout's package is not installed here"
    (Path(site) / "locked_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check"]
    gunicorn = re.search(r"^gunicorn==\S+", (ROOT / "requirements.txt").read_text(), re.M)
    assert gunicorn, "gunicorn is locked"
    # (gunicorn again, so that the virtualenv has its command)
    install = [*pip, "install", "-q", "--no-deps", "--ignore-installed", str(wheels[0]), gunicorn.group()]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    checked = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return venv / "bin"


def clean_env(bin_dir: Path, **extra) -> dict[str, str]:
    """No setting of the test run's, no PYTHONPATH that could reach the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DATA_DIR", "DATABASE_URL", "STORAGE_URL", "FFMPEG_BINARY")
    }
    env["PATH"] = os.pathsep.join(
        [str(bin_dir), *(p for p in env.get("PATH", "").split(os.pathsep) if p != str(Path(sys.executable).parent))]
    )
    env.update(extra)
    return env


def test_the_wheel_holds_everything_and_runs_from_an_empty_directory(installed, tmp_path, media):
    empty = tmp_path / "empty"
    empty.mkdir()
    python = str(installed / "python")
    listed = subprocess.run(
        [python, "-c", "import refresher, refresher.webapp, refresher.settings; print(refresher.__file__)"],
        cwd=empty,
        env=clean_env(installed),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "site-packages" in listed.stdout and str(ROOT) not in listed.stdout

    usage = subprocess.run(
        [str(installed / "refresher"), "--help"],
        cwd=empty,
        env=clean_env(installed),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 0 and usage.stdout.startswith("usage: refresher "), usage.stdout + usage.stderr

    worker = subprocess.run(
        [python, "-m", "refresher.worker", "--help"],
        cwd=empty,
        env=clean_env(installed),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0 and "usage: python -m refresher.worker" in worker.stdout, worker.stderr
    assert list(empty.iterdir()) == [], "--help starts nothing and makes no DATA_DIR"

    port, tag = free_port(), uuid.uuid4().hex
    env = clean_env(
        installed,
        HOST="127.0.0.1",
        PORT=str(port),
        AUTH_PASSWORD="wheel-test-password",
        ENCODE_WORKERS="1",
        REFRESHER_TEST_TAG=tag,
    )
    log = open(tmp_path / "gunicorn.log", "wb")
    server = subprocess.Popen(
        [str(installed / "gunicorn"), "-c", "python:refresher.gunicorn_config", "refresher.wsgi:app"],
        cwd=empty,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
            try:
                if requests.get(url + "/api/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        assert (empty / "data" / "refresher.db").exists(), "DATA_DIR is ./data of where it started"
        # The installed client, against the installed server: a job from upload to download.
        client_env = clean_env(
            installed,
            REFRESHER_URL=url,
            REFRESHER_PASSWORD="wheel-test-password",
            XDG_CONFIG_HOME=str(tmp_path / "config"),
        )
        run = subprocess.run(
            [str(installed / "refresher"), "login", "--save"],
            cwd=empty,
            env=client_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        run = subprocess.run(
            [
                str(installed / "refresher"),
                "submit",
                str(media["clip"]),
                "-n",
                "1",
                "--wait",
                "--download",
                str(tmp_path / "out.zip"),
            ],
            cwd=empty,
            env=client_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert (tmp_path / "out.zip").stat().st_size > 1000
        assert not re.search(r"Traceback", (tmp_path / "gunicorn.log").read_text())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        log.close()
        for pid in processes_tagged(tag):
            os.kill(pid, signal.SIGKILL)
