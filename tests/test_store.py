"""The store on its own: what every process relies on."""
from __future__ import annotations

import multiprocessing

from refresher import store


def _migrate(db_path, start) -> None:
    start.wait()
    conn = store.connect(db_path)
    try:
        store.migrate(conn)
    finally:
        conn.close()


def test_processes_starting_together_all_migrate_a_fresh_database(tmp_path):
    """The web workers and the supervisor of a first start all open a database
    that does not exist yet; switching it to WAL must not fail any of them."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(40):
        db_path = tmp_path / f"fresh{round_}.db"
        start = ctx.Event()
        processes = [ctx.Process(target=_migrate, args=(db_path, start)) for _ in range(6)]
        for p in processes:
            p.start()
        start.set()
        for p in processes:
            p.join(60)
        assert [p.exitcode for p in processes] == [0] * 6
        conn = store.connect(db_path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.schema_version(conn) == len(store.MIGRATIONS)
        conn.close()
