"""API tokens: named, revocable, shown once, stored only as a hash — through
the HTTP API and through `flask --app app tokens …`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from refresher.webapp import create_app

from .conftest import PASSWORD, make_settings
from .support.servers import run_python


@pytest.fixture
def session(client) -> dict:
    r = client.post("/api/auth", json={"password": PASSWORD})
    assert r.status_code == 200
    return {"Authorization": f"Bearer {r.get_json()['token']}"}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def create(client, session, name="nightly build") -> dict:
    r = client.post("/api/tokens", json={"name": name}, headers=session)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def test_token_lifecycle(client, session):
    made = create(client, session)
    assert set(made) == {"id", "name", "token", "createdAt"}
    assert made["name"] == "nightly build" and made["createdAt"].endswith("Z")

    # it works wherever a session does, except for making more tokens
    assert client.get("/api/jobs", headers=bearer(made["token"])).status_code == 200
    assert client.get("/api/tokens", headers=bearer(made["token"])).status_code == 200
    r = client.post("/api/tokens", json={"name": "another"}, headers=bearer(made["token"]))
    assert r.status_code == 403 and "error" in r.get_json()

    listed = client.get("/api/tokens", headers=session)
    assert listed.status_code == 200
    [item] = listed.get_json()
    assert item == {
        "id": made["id"],
        "name": "nightly build",
        "createdAt": made["createdAt"],
        "lastUsedAt": item["lastUsedAt"],
    }
    assert item["lastUsedAt"].endswith("Z")
    assert made["token"] not in listed.get_data(as_text=True)

    # revoked: refused at once, everywhere
    assert client.delete(f"/api/tokens/{made['id']}", headers=session).status_code == 204
    r = client.get("/api/jobs", headers=bearer(made["token"]))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/tokens", headers=session).get_json() == []
    r = client.delete(f"/api/tokens/{made['id']}", headers=session)
    assert r.status_code == 404 and "error" in r.get_json()


def test_an_api_token_may_revoke_only_itself(client, session):
    mine, other = create(client, session, "mine"), create(client, session, "other")
    r = client.delete(f"/api/tokens/{other['id']}", headers=bearer(mine["token"]))
    assert r.status_code == 403 and "only itself" in r.get_json()["error"]
    r = client.delete("/api/tokens/unknown", headers=bearer(mine["token"]))
    assert r.status_code == 403, "nor does it learn which ids exist"
    assert client.get("/api/jobs", headers=bearer(other["token"])).status_code == 200, "the other still works"

    assert client.delete(f"/api/tokens/{mine['id']}", headers=bearer(mine["token"])).status_code == 204
    assert client.get("/api/jobs", headers=bearer(mine["token"])).status_code == 401
    assert [t["id"] for t in client.get("/api/tokens", headers=session).get_json()] == [other["id"]]


def test_secrets_are_random_and_recognizable(client, session):
    secrets = {create(client, session, f"t{i}")["token"] for i in range(5)}
    assert len(secrets) == 5
    assert all(s.startswith("vr_") and len(s) >= 40 for s in secrets)


def test_secrets_are_never_stored_in_clear(app, client, session):
    secrets = [create(client, session, f"script {i}")["token"] for i in range(3)]
    for secret in secrets:  # used, so its row was written again
        assert client.get("/api/jobs", headers=bearer(secret)).status_code == 200
    data_dir = Path(app.extensions["refresher"].settings.data_dir)
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("refresher.db") for p in files)
    for path in files:  # the database, its WAL and anything else kept there
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, f"{path.name} holds a token secret"


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": 42},
        {"name": None},
        {},
        {"name": "two\nlines"},
        ["nightly"],
        {"name": "invoice\u202egpj"},
        {"name": "two\u2028lines"},
        {"name": "zero\u200bwidth"},
        {"name": "\ue000"},
    ],
)
def test_bad_names_are_refused(client, session, body):
    r = client.post("/api/tokens", json=body, headers=session)
    assert r.status_code == 400 and "name" in r.get_json()["error"]


def test_odd_text_is_refused_not_a_server_error(client, session):
    # JSON can carry lone surrogates, which no database column can store
    r = client.post("/api/tokens", data='{"name": "\\ud800"}', content_type="application/json", headers=session)
    assert r.status_code == 400
    r = client.post("/api/auth", data='{"password": "\\ud800"}', content_type="application/json")
    assert r.status_code == 401


def test_names_are_trimmed_and_may_be_100_characters(client, session):
    assert create(client, session, "  padded  ")["name"] == "padded"
    assert create(client, session, "é" * 100)["name"] == "é" * 100
    r = client.post("/api/tokens", data={"name": "from a form"}, headers=session)
    assert r.status_code == 201


def test_last_use_is_recorded_at_most_once_a_minute(app, client, session, monkeypatch):
    made = create(client, session)
    assert client.get("/api/tokens", headers=session).get_json()[0]["lastUsedAt"] is None
    writes = []
    db = app.extensions["refresher"].store
    real_touch = db.touch_api_token
    monkeypatch.setattr(db, "touch_api_token", lambda *a, **kw: (writes.append(a), real_touch(*a, **kw)))
    for _ in range(5):
        assert client.get("/api/jobs", headers=bearer(made["token"])).status_code == 200
    assert len(writes) == 1
    first_use = client.get("/api/tokens", headers=session).get_json()[0]["lastUsedAt"]
    assert first_use is not None

    # a minute later the next use is recorded again
    with db.writing() as conn:
        conn.exec_driver_sql("UPDATE api_tokens SET last_used_at = last_used_at - 61")
    assert client.get("/api/jobs", headers=bearer(made["token"])).status_code == 200
    assert len(writes) == 2
    assert client.get("/api/tokens", headers=session).get_json()[0]["lastUsedAt"] >= first_use


# --- flask --app app tokens … ---------------------------------------------------------


def _fields(output: str) -> dict:
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)


def test_cli_create_list_revoke(app, client):
    runner = app.test_cli_runner()
    made = runner.invoke(args=["tokens", "create", "deploy bot"])
    assert made.exit_code == 0, made.output
    fields = _fields(made.stdout)
    assert fields["name"] == "deploy bot" and fields["token"].startswith("vr_")
    assert "not shown again" in made.stderr
    assert client.get("/api/jobs", headers=bearer(fields["token"])).status_code == 200

    listed = runner.invoke(args=["tokens", "list"])
    assert listed.exit_code == 0
    assert fields["id"] in listed.stdout and "deploy bot" in listed.stdout
    assert fields["token"] not in listed.stdout

    revoked = runner.invoke(args=["tokens", "revoke", fields["id"]])
    assert revoked.exit_code == 0 and fields["id"] in revoked.stdout
    assert client.get("/api/jobs", headers=bearer(fields["token"])).status_code == 401
    assert runner.invoke(args=["tokens", "list"]).stdout.strip() == "no API tokens"


def test_cli_refuses_bad_input(app):
    runner = app.test_cli_runner()
    unknown = runner.invoke(args=["tokens", "revoke", "no-such-id"])
    assert unknown.exit_code == 1 and "no API token with id no-such-id" in unknown.output
    for name in ("", "   ", "x" * 101):
        bad = runner.invoke(args=["tokens", "create", name])
        assert bad.exit_code == 2 and "1 to 100" in bad.output


def test_cli_through_the_real_flask_command(tmp_path):
    """The command as README shows it, with settings from the environment."""
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "AUTH_PASSWORD": PASSWORD}

    def flask(*args):
        return run_python(["-m", "flask", "--app", "app", "tokens", *args], env)

    made = flask("create", "nightly build")
    assert made.returncode == 0, made.stderr
    fields = _fields(made.stdout)
    listed = flask("list")
    assert listed.returncode == 0 and fields["id"] in listed.stdout and fields["token"] not in listed.stdout

    app = create_app(make_settings(tmp_path / "data"))
    assert app.test_client().get("/api/jobs", headers=bearer(fields["token"])).status_code == 200
    assert flask("revoke", fields["id"]).returncode == 0
    assert app.test_client().get("/api/jobs", headers=bearer(fields["token"])).status_code == 401


def test_a_revoked_token_stops_working_at_once_on_every_server(gunicorn_server, tmp_path, database_url):
    """Two servers on one database (PostgreSQL: hosts of their own; SQLite:
    one DATA_DIR): a token made on one works on the other, a session token
    too (the secret is shared), and a revocation on either is refused by
    both at once."""
    import requests

    env = {"DATABASE_URL": database_url} if database_url else {"DATA_DIR": tmp_path / "shared"}
    one = gunicorn_server(ENCODE_WORKERS=0, **env)
    two = gunicorn_server(ENCODE_WORKERS=0, **env)
    assert two.session.get(two.url + "/api/tokens", headers=one.session.headers).status_code == 200
    made = one.session.post(one.url + "/api/tokens", json={"name": "ci"}).json()
    for server in (one, two):
        assert requests.get(server.url + "/api/jobs", headers=bearer(made["token"])).status_code == 200
    assert two.session.delete(f"{two.url}/api/tokens/{made['id']}").status_code == 204
    for server in (one, two):
        r = requests.get(server.url + "/api/jobs", headers=bearer(made["token"]))
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
