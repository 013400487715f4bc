"""Every benchmark still runs and prints its figures side by side (tiny inputs,
no assertions on times: these machines are shared and noisy)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT

# The least each benchmark needs to run every one of its measurements once:
# one round, one run, the shortest clips that still encode while they are
# polled or cancelled, and 320x240 but for the clips that are cancelled
# (BENCH_CLIP_SIZE). The figures printed are not the point here.
RUNS = {
    "cancel_latency.py": ["--runs", "1", "--seconds", "5"],
    "cluster.py": [
        *("--rounds", "1", "--seconds", "1", "--variations", "1"),
        *("--requests", "4", "--pollers", "2", "--cancels", "1", "--long-seconds", "8"),
    ],
    "effects_cost.py": ["--seconds", "1", "--variations", "2", "--repeat", "1"],
    "encode_workers.py": ["--workers", "1,2", "--seconds", "1", "--rounds", "1"],
    "throughput.py": ["--seconds", "1", "--variations", "1", "--pollers", "1"],
    "zip_download.py": ["--mb-per-output", "1"],
    "status_latency.py": ["--streams", "1", "--requests", "4", "--pollers", "2", "--seconds", "8"],
    "upload_memory.py": ["--mb", "5"],
    "tus_upload.py": ["--mb", "5"],
    "probe_memory.py": ["--size", "7700x4400", "--uploads", "1"],
    "resilience.py": ["--seconds", "5"],
    "slow_clients.py": ["--slow", "10", "--seconds", "1", "--pollers", "2"],
    "quality.py": ["--tiny"],
    "schedule.py": ["--seconds", "1", "--variations", "2", "--seeds", "1"],
    "server_cost.py": ["--rounds", "1", "--seconds", "1", "--source-seconds", "1"],
    "object_storage.py": [
        *("--rounds", "1", "--seconds", "1", "--variations", "1"),
        *("--mb-per-output", "1", "--upload-mb", "5"),
    ],
}


def test_every_benchmark_is_covered():
    scripts = {p.name for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(RUNS)


@pytest.mark.parametrize("script", sorted(RUNS))
def test_benchmark_runs(script, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    module = "bench." + script.removesuffix(".py")
    r = subprocess.run(
        [sys.executable, "-m", module, *RUNS[script]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(tmp), "BENCH_CLIP_SIZE": "320x240"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(tmp.iterdir()) == [], "a benchmark removes its media and servers' data when it ends"
    lines = r.stdout.splitlines()
    assert any("baseline" in line for line in lines) or "replaced" in r.stdout, r.stdout
    assert any("service" in line for line in lines) or "replaced" in r.stdout, r.stdout
    print(r.stdout)
