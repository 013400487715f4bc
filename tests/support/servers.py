"""Helpers for tests that drive a real server over HTTP, and the commands that start one."""

from __future__ import annotations

import time
from pathlib import Path

START_COMMANDS = {
    "gunicorn": ["-m", "gunicorn", "-c", "config/gunicorn.conf.py", "app:app"],
    "worker": ["-m", "refresher.worker"],
    "app.py": ["app.py"],
}


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
