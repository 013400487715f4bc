"""The schema: any database brought up to the newest revision (the Alembic
scripts are in `migrations/`), and the check that it takes writes at all."""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert
from sqlalchemy.engine import Connection

from .database import MIGRATION_LOCK, Database, OperationalError, new_id, through_a_full_disk
from .schema import metadata, secrets

LEGACY_SCHEMA_VERSION = 4  # the last version of the pre-Alembic schema


def alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "refresher.store:migrations")
    config.attributes["connection"] = connection
    return config


class Migration(Database):
    def migrate(self) -> None:
        """Bring the schema to the newest revision. Safe from many processes at
        once: one migrates under a lock, the others find it done."""
        if self.dialect == "sqlite":
            with self.reading() as conn:
                _use_wal(conn)
        with self.engine.connect() as conn:
            config = alembic_config(conn)
            head = ScriptDirectory.from_config(config).get_current_head()
            if MigrationContext.configure(conn).get_current_revision() == head:
                conn.rollback()
                return
            conn.rollback()
            with conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                inspector = sa.inspect(conn)
                if not inspector.get_table_names():
                    # A new database: the newest schema at once, as the
                    # migrations would build it (a test holds the two equal).
                    metadata.create_all(conn)
                    command.stamp(config, "head")
                    return
                if inspector.has_table("schema_version") and not inspector.has_table("alembic_version"):
                    _adopt_legacy_schema(conn, config)
                command.upgrade(config, "head")

    @through_a_full_disk
    def check_writable(self) -> None:
        """Raises the database's own error when it takes no writes (a
        read-only file or folder, a read-only server): writes a row and takes
        it back."""
        with self.engine.connect() as conn:
            transaction = conn.begin()
            try:
                conn.execute(insert(secrets).values(name=f"write-check-{new_id()}", value="", created_at=time.time()))
            finally:
                transaction.rollback()


def _use_wal(conn: Connection, timeout: float = 30) -> None:
    """WAL lets readers and one writer work side by side; it stays set in the
    file. Several processes starting at once may race to switch it, and the
    switch answers "locked" at once instead of waiting: retry."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if conn.exec_driver_sql("PRAGMA journal_mode").scalar_one().lower() != "wal":
                conn.exec_driver_sql("PRAGMA journal_mode = WAL")
            return
        except OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _adopt_legacy_schema(conn: Connection, config: Config) -> None:
    """A database from before Alembic: its last schema is revision 0001."""
    version = conn.execute(sa.text("SELECT MAX(version) FROM schema_version")).scalar() or 0
    if version != LEGACY_SCHEMA_VERSION:
        raise RuntimeError(
            f"the database has schema version {version}; this release can upgrade only version {LEGACY_SCHEMA_VERSION}"
        )
    command.stamp(config, "0001")
    conn.execute(sa.text("DROP TABLE schema_version"))
