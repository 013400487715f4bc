"""Looking at the processes of a server under test, through /proc."""

from __future__ import annotations

import os
from pathlib import Path


def children_of(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def encode_workers(supervisor_pid: int) -> list[int]:
    """The supervisor's encode workers (not multiprocessing's resource tracker)."""
    found = []
    for pid in children_of(supervisor_pid):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except FileNotFoundError:
            continue
    return found


def mapped_packages(pid: int) -> set[str]:
    """The installed packages (site-packages folders) whose compiled modules a process has loaded."""
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split()[-1]
        if "/site-packages/" in path:
            found.add(path.split("/site-packages/", 1)[1].split("/", 1)[0])
    return found
