"""The way a new user meets the service: a fresh copy of the repository, the
README's first command exactly as written (its own virtualenv, its own
install, every setting left at its default: DATA_DIR relative, the bundled
ffmpeg whatever else is on PATH, a generated password), and then the page in
Chromium: thumbnails, previews that play, and single downloads."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from refresher.settings import describe

from .conftest import ROOT
from .support.servers import free_port, processes_tagged
from .support.checkout import fresh_copy

pytestmark = pytest.mark.e2e


def readme_commands() -> list[str]:
    """The shell blocks of the README, in order."""
    return re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


class ReadmeServer:
    def __init__(self, checkout: Path, command: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tag = uuid.uuid4().hex
        self.log_path = checkout.parent / "service.log"
        env = {k: v for k, v in os.environ.items() if k not in describe() and k != "VIRTUAL_ENV"}
        venv_bin = str(Path(os.sys.executable).parent)
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
        # Servers that tests start listen on loopback only: the one setting given.
        env.update(HOST="127.0.0.1", PORT=str(self.port), REFRESHER_TEST_TAG=self.tag)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["sh", "-c", command],
                cwd=checkout,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the command exited:\n" + self.log()[-5000:]
            try:
                if requests.get(self.url + "/api/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError("the service did not become healthy:\n" + self.log()[-5000:])

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        for pid in processes_tagged(self.tag):
            os.kill(pid, signal.SIGKILL)


def test_the_readme_first_command_with_its_defaults_shows_thumbnails_previews_and_downloads(tmp_path, media, page):
    command = readme_commands()[0].strip()
    assert command.startswith("python3 -m venv") and "gunicorn" in command
    checkout = fresh_copy(tmp_path / "video-refresher")
    server = ReadmeServer(checkout, command)
    try:
        server.wait_healthy(timeout=240)
        generated = re.findall(r"Generated password for Video Refresher: (\S+)", server.log())
        assert len(generated) == 1, "a generated password, printed once"
        password = generated[0]
        assert (checkout / "data" / "refresher.db").exists(), "DATA_DIR is ./data of the checkout"
        assert "/usr/bin/ffmpeg" not in server.log()

        # A job, through the page a new user sees.
        page.goto(server.url + "/")
        page.wait_for_url(re.compile(r"/login"))
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url(server.url + "/")
        page.set_input_files("#videos", [str(media["clip"]), str(media["clip2"])])
        page.fill("#variations", "2")
        page.click("#upload-submit")
        page.wait_for_selector("#upload-message.alert-success")
        card = page.locator(".job-card").first
        card.locator(".badge", has_text="Completed").wait_for(timeout=120_000)

        thumb = card.locator(".job-thumb img")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())

        card.locator(".job-title").click()
        page.wait_for_url(re.compile(r"/jobs/"))
        variations = page.locator(".variation")
        variations.nth(3).wait_for()
        for i in range(4):
            video = variations.nth(i).locator("video")
            video.scroll_into_view_if_needed()
            page.wait_for_function(
                "v => v.readyState >= 2 && v.duration > 0", arg=video.element_handle(), timeout=20_000
            )
        first = variations.first.locator("video")
        first.evaluate("v => { v.muted = true; return v.play(); }")
        page.wait_for_function("v => v.currentTime > 0.2", arg=first.element_handle(), timeout=20_000)

        with page.expect_download() as one:
            variations.first.locator("a[download]").click()
        assert one.value.suggested_filename.endswith(".mp4")
        assert Path(one.value.path()).read_bytes()[4:8] == b"ftyp"
        # (health answers 503 while the service is still starting: not an error)
        assert not re.search(r'"(?!GET /api/health )[^"]*HTTP/1.1" 5\d\d ', server.log()), "no request answered 5xx"
    finally:
        server.stop()
