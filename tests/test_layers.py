"""The layering the code claims, checked on the running processes: after a
job, the engine's side (the supervisor and its encode workers) has never
imported the web's libraries, and encode workers no database library either;
and with no bucket set, no process has loaded boto3 (each would pay its
import's CPU at start, and its memory for as long as it lives).

Every Python process of the server under test reports the modules it had
imported as it exits (tests/support/module_report/sitecustomize.py, put on
its PYTHONPATH); a web worker's report, which has Flask, shows the report is
read right."""

from __future__ import annotations

import json
import os

from .conftest import ROOT
from .support.servers import submit, wait_done

WEB = ("flask", "werkzeug", "jinja2", "flask_httpauth", "flask_limiter")
DATABASE = ("sqlalchemy", "psycopg", "alembic")
BUCKET = ("boto3", "botocore", "s3transfer")


def test_after_a_job_the_engine_has_imported_no_web_library(gunicorn_server, media, tmp_path):
    reports = tmp_path / "modules"
    reports.mkdir()
    pythonpath = os.pathsep.join([str(ROOT / "tests" / "support" / "module_report"), str(ROOT)])
    server = gunicorn_server(ENCODE_WORKERS=2, PYTHONPATH=pythonpath, REFRESHER_MODULE_REPORT=reports)
    job = wait_done(server, submit(server, [media["clip"], media["clip2"]], 2)["jobId"])
    assert job["status"] == "completed"
    assert server.session.get(server.url + job["downloadUrl"]).status_code == 200
    server.stop()

    processes = [json.loads(p.read_text()) for p in reports.glob("*.json")]
    master = next(p for p in processes if any("gunicorn" in a for a in p["argv"]) and p["pid"] == server.proc.pid)
    web_workers = [p for p in processes if p["ppid"] == master["pid"] and "--control" not in p["argv"]]
    supervisor = [p for p in processes if p["ppid"] == master["pid"] and "--control" in p["argv"]]
    # spawned children are handed their parent's argv (multiprocessing's
    # resource tracker is not: it runs `python -c`); they are told apart by their parent
    encoders = [p for p in processes if supervisor and p["ppid"] == supervisor[0]["pid"] and "--control" in p["argv"]]
    assert web_workers and len(supervisor) == 1 and len(encoders) == 2, [p["argv"] for p in processes]

    assert all("flask" in p["modules"] for p in web_workers), "a web worker has Flask: the report is read right"
    imported = set(supervisor[0]["modules"])
    assert not {m for m in imported if m.split(".")[0] in WEB}, sorted(m for m in imported if m.split(".")[0] in WEB)
    for encoder in encoders:
        imported = {m.split(".")[0] for m in encoder["modules"]}
        assert not imported & set(WEB + DATABASE), sorted(imported & set(WEB + DATABASE))

    for process in processes:
        imported = {m.split(".")[0] for m in process["modules"]}
        assert not imported & set(BUCKET), (process["argv"], sorted(imported & set(BUCKET)))
