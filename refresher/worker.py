"""The worker process type: `python -m refresher.worker` runs the supervisor
alone — its encode workers, its control block and the cleanup daemon — for
hosts that only encode (Procfile `worker:`). Web processes then run with
ENCODE_WORKERS=0, and every process shares DATABASE_URL (PostgreSQL) and,
where hosts share no disk, STORAGE_URL.

This module is the process's main module, and multiprocessing's "spawn"
imports the main module again in every encode worker the supervisor starts.
So it imports nothing heavy at its top: the supervisor's database, scheduler
and storage libraries are imported by `main`, and an encode worker never
loads them (see `engine/__main__.py`).
"""

from __future__ import annotations

import argparse
import sys

from .engine.lifeline import exit_at_once

USAGE = """Runs this host's supervisor alone: its encode workers, its control block
and the cleanup daemon, for hosts that only encode (the Procfile's worker
process type). Web processes then run with ENCODE_WORKERS=0.

Every setting comes from the environment, as for the web process: the
shared DATABASE_URL (PostgreSQL), STORAGE_URL where hosts share no disk, and
HOST_ID (unique per worker process); LOG_LEVEL (default INFO). SIGTERM
stops it in about half a second: running ffmpeg are killed, their
variations go back to the queue."""


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        prog="python -m refresher.worker", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args(argv)
    from .settings import SettingsError, load_settings

    from .engine.control import ControlBlock, remove_abandoned
    from .engine.supervisor import HostIdInUse, run_supervisor
    from .media.check import FFmpegUnusable, check_binary
    from .media.ffmpeg import FFmpegNotFound, resolve_binary
    from .startup import DataDirUnusable, prepare

    try:
        settings = load_settings()
        if settings.encode_workers == 0:
            raise SettingsError("ENCODE_WORKERS is 0, but a worker process is there to encode; set it to 1 or more")
        check_binary(resolve_binary(settings.ffmpeg_binary))
        prepare(settings)  # the secrets are made once, by whichever process comes first
    except (SettingsError, FFmpegNotFound, FFmpegUnusable, DataDirUnusable) as exc:
        sys.stderr.write(f"Video Refresher cannot start: {exc}\n")
        sys.exit(2)
    run_dir = settings.data_dir / "run"
    remove_abandoned(run_dir)
    control = ControlBlock.create(run_dir)
    try:
        run_supervisor(settings, control)
    except HostIdInUse as exc:
        sys.stderr.write(f"Video Refresher cannot start: {exc}\n")
        sys.exit(2)
    finally:
        control.remove()


if __name__ == "__main__":
    main()
    exit_at_once()
