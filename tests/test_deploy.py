"""What a platform reads to build and run the service: app.json, the
Procfile and .python-version agree with each other and with the code."""

from __future__ import annotations

import json
import tomllib

from refresher.settings import describe, load_settings

from .conftest import ROOT


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_app_json_is_valid_and_its_formation_matches_the_procfile():
    manifest = json.loads((ROOT / "app.json").read_text())
    assert set(manifest["formation"]) == set(procfile()) == {"web", "worker"}
    # dynos share no disk: until media live in object storage, the web dyno encodes
    assert manifest["formation"]["web"]["quantity"] == 1
    assert manifest["formation"]["worker"]["quantity"] == 0
    assert any(addon["plan"].split(":")[0] == "heroku-postgresql" for addon in manifest["addons"])


def test_app_json_sets_only_settings_the_service_reads_and_values_it_accepts():
    env = json.loads((ROOT / "app.json").read_text())["env"]
    assert set(env) <= set(describe()), set(env) - set(describe())
    fixed = {name: spec["value"] for name, spec in env.items() if "value" in spec}
    load_settings(fixed)  # raises SettingsError on a value the service would refuse
    generated = {name for name, spec in env.items() if spec.get("generator") == "secret"}
    assert generated == {"AUTH_PASSWORD"}, "the token secret is kept in the database, shared by every dyno"


def test_the_web_dyno_of_the_manifest_encodes_and_a_worker_formation_takes_one_setting():
    env = json.loads((ROOT / "app.json").read_text())["env"]
    fixed = {name: spec["value"] for name, spec in env.items() if "value" in spec}
    assert load_settings(fixed).for_web().encode_workers >= 1, "the only dyno encodes"
    scaled = load_settings({**fixed, "WEB_ENCODE_WORKERS": "0"})  # README: scaling out to worker dynos
    assert scaled.for_web().encode_workers == 0 and scaled.encode_workers >= 1


def test_python_version_is_a_major_minor_the_project_allows():
    """The buildpack installs the newest patch release of the pinned 3.x."""
    pinned = (ROOT / ".python-version").read_text().strip()
    major, minor = (int(part) for part in pinned.split("."))
    allowed = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low, high = (tuple(int(p) for p in bound.lstrip("<>=").split(".")) for bound in allowed.split(","))
    assert low <= (major, minor) < high, (pinned, allowed)
