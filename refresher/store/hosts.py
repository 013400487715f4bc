"""Hosts: which supervisor run holds each HOST_ID, its heartbeats, the hosts
that fell silent, and the lock that lets one process of the whole cluster
run the cleanup at a time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import delete, select, update

from .database import CLUSTER_LOCKS, Database
from .rows import mapping
from .schema import hosts


class Hosts(Database):
    def register_host(
        self, host: str, instance: str, machine: str, pid: int, now: float, timeout: float
    ) -> dict | None:
        """Take the host id `host` for this supervisor run (`instance`) unless
        another run holds it with a heartbeat younger than `timeout`. None
        when taken; else the holder's row, untouched."""
        values = {"instance": instance, "machine": machine, "pid": pid, "started_at": now, "heartbeat_at": now}
        statement = (
            self.upsert(hosts)
            .values(id=host, **values)
            .on_conflict_do_update(
                index_elements=[hosts.c.id],
                set_=values,
                where=sa.or_(hosts.c.heartbeat_at <= now - timeout, hosts.c.instance == instance),
            )
        )
        with self.writing() as conn:
            # RETURNING, not rowcount: psycopg reports -1 for an upsert
            if conn.execute(statement.returning(hosts.c.id)).first() is not None:
                return None
            return mapping(conn.execute(select(hosts).where(hosts.c.id == host)).first())

    def take_over_host(self, host: str, holder: Mapping, instance: str, machine: str, pid: int, now: float) -> bool:
        """Take the host id from a holder known to be dead, if the row is still
        exactly as it was seen (nobody else took it or beat since)."""
        with self.writing() as conn:
            return (
                conn.execute(
                    update(hosts)
                    .where(
                        hosts.c.id == host,
                        hosts.c.instance.is_not_distinct_from(holder["instance"]),
                        hosts.c.heartbeat_at == holder["heartbeat_at"],
                    )
                    .values(instance=instance, machine=machine, pid=pid, started_at=now, heartbeat_at=now)
                ).rowcount
                == 1
            )

    def heartbeat(self, host: str, instance: str, pid: int, now: float) -> bool:
        """This supervisor run is alive. False when another run has taken its
        host id meanwhile (it was presumed dead): that row is left alone."""
        statement = self.upsert(hosts).values(id=host, instance=instance, pid=pid, started_at=now, heartbeat_at=now)
        with self.writing() as conn:
            return (
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[hosts.c.id],
                        set_={"pid": pid, "heartbeat_at": now},
                        where=hosts.c.instance.is_not_distinct_from(instance),
                    ).returning(hosts.c.id)
                ).first()
                is not None
            )

    def forget_host(self, host: str, instance: str | None = None, silent_since: float | None = None) -> None:
        """A supervisor that stops cleanly has handed its work back (only its
        own run's row: `instance`); a silent host has been taken over (only
        if it is still silent: `silent_since`)."""
        where = [hosts.c.id == host]
        if instance is not None:
            where.append(hosts.c.instance == instance)
        if silent_since is not None:
            where.append(hosts.c.heartbeat_at <= silent_since)
        with self.writing() as conn:
            conn.execute(delete(hosts).where(*where))

    def live_hosts(self, now: float, timeout: float) -> list[dict]:
        with self.reading() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(select(hosts).where(hosts.c.heartbeat_at > now - timeout).order_by(hosts.c.id))
            ]

    def silent_hosts(self, now: float, timeout: float) -> list[str]:
        """Hosts presumed dead: no heartbeat for `timeout` seconds."""
        with self.reading() as conn:
            return list(conn.execute(select(hosts.c.id).where(hosts.c.heartbeat_at <= now - timeout)).scalars())

    @contextmanager
    def cluster_lock(self, name: str) -> Iterator[bool]:
        """Yields True to the one process of the whole cluster that holds the
        lock for this block, False to the others (PostgreSQL advisory lock).
        SQLite serves one host, whose supervisor is alone by its DATA_DIR lock."""
        if self.dialect != "postgresql":
            yield True
            return
        key = CLUSTER_LOCKS[name]
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            held = conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
            try:
                yield bool(held)
            finally:
                if held:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
