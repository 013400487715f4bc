"""What a process checks and tidies before it serves or encodes.

`prepare` runs once per start of a process type — in gunicorn's master
(`on_starting`), in `python app.py` and in `python -m refresher.worker` —
before any web worker or supervisor exists; `open_store` is its first half,
which every app (every web worker) also runs.

A DATA_DIR or database that cannot be used (a corrupt or read-only database,
a read-only folder) is a `DataDirUnusable` whose message names the path and
the problem; the entry points print it as one line and exit with status 2,
as they do for a bad setting, instead of every process failing on it with a
traceback of its own.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic.util import CommandError

from .settings import Settings

from . import spool
from .auth import load_secrets, record_password_source
from .storage import StorageError, for_settings
from .store import Error as StoreError
from .store import Store, shown_url

SUBFOLDERS = ("incoming", "jobs", "run")  # where the service writes under DATA_DIR


class DataDirUnusable(Exception):
    """DATA_DIR or the database cannot be used; the message says which and why."""


def open_store(settings: Settings, shared: bool = True) -> Store:
    """The store, once DATA_DIR and its folders take files and the database
    is migrated and takes writes. `shared`: this process's store for the
    database (a web worker's), else a store of its own to close."""
    _check_folder(settings.data_dir, "DATA_DIR")
    for name in SUBFOLDERS:
        if (settings.data_dir / name).exists():
            _check_folder(settings.data_dir / name, "the folder")
    try:
        store = Store.shared(settings.database) if shared else Store(settings.database)
        store.migrate()
        store.check_writable()
        store.reserve.keep()
    except (StoreError, CommandError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DataDirUnusable(f"the database {database_name(settings)} cannot be used: {reason}") from None
    return store


def prepare(settings: Settings) -> list[Path]:
    """Once per start, before anything is served or encoded: DATA_DIR and the
    database ready, the secrets made, and the uploads that a stopped server
    left in DATA_DIR/incoming removed (those a live server is receiving stay).
    Returns what was removed."""
    store = open_store(settings, shared=False)
    try:
        load_secrets(settings, store)
        record_password_source(settings, store)
    finally:
        store.close()
    try:
        for_settings(settings).check()
    except StorageError as exc:
        raise DataDirUnusable(str(exc)) from None
    return spool.remove_abandoned(settings.data_dir)


def database_name(settings: Settings) -> str:
    """The SQLite file, or the database URL without its password."""
    if settings.db_path is not None:
        return str(settings.db_path)
    return shown_url(settings.database)


def _check_folder(folder: Path, label: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise DataDirUnusable(f"{label} {folder} is not a writable folder: {exc.strerror or exc}") from None
