"""Helpers for tests that call the API of an app in-process (Flask's test client)."""

from __future__ import annotations

from refresher.store import Store

from ..conftest import PASSWORD, sql


def login(client) -> dict:
    r = client.post("/api/auth", json={"password": PASSWORD})
    assert r.status_code == 200
    return {"Authorization": f"Bearer {r.get_json()['token']}"}


def assert_nothing_left(app):
    settings = app.extensions["refresher"].settings
    conn = Store.shared(settings.database)
    assert sql(conn, "SELECT COUNT(*) FROM jobs")[0][0] == 0
    assert sql(conn, "SELECT COUNT(*) FROM source_files")[0][0] == 0
    jobs = settings.data_dir / "jobs"
    assert not jobs.exists() or not list(jobs.iterdir())
    incoming = settings.data_dir / "incoming"
    assert not incoming.exists() or not list(incoming.iterdir())
