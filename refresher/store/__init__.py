"""The store: every SQL statement of the service, on SQLite or PostgreSQL.

SQLAlchemy Core builds the statements, so one query serves both engines;
Alembic keeps the schema (`migrations/`), and `Store.migrate()` brings any
database up to date, safely from many processes at once. The store decides
nothing: a transition loads the current state under a lock, asks
`refresher.rules` what follows, and writes exactly that.

Each process makes its own `Store` (after any fork): web workers, the
supervisor, the cleanup daemon. Reads run without a transaction; writes run
in one (`BEGIN IMMEDIATE` on SQLite, so two writers never deadlock on a lock
upgrade; row locks on PostgreSQL).

The modules, one responsibility each:

    database.py   engines, the connection pool, transactions, ChangeWatch
    migration.py  the schema brought up to date
    rows.py       rows as plain dicts, and as the rules' states
    jobs.py       jobs as people see and change them: read, create under the
                  queue's cap, delete, cancel, retry, resume; settling a job
    queue.py      the supervisor's side: claims, starting or failing a queued
                  job, what each attempt reports, progress roll-up
    hosts.py      HOST_IDs, heartbeats, silent hosts, the cluster-wide lock
    lifecycle.py  what expiry, eviction and the sweep ask
    uploads.py    resumable uploads: how far each got, who is receiving it
    access.py     shared secrets, API tokens, ended sessions, rate limits
    listener.py   PostgreSQL LISTEN for accepted cancels (CancelListener)
    webhooks.py   announcements of jobs' ends: queued, claimed, recorded
"""

from __future__ import annotations

from .access import EVERY_SESSION, Access
from .database import ChangeWatch, Error, OperationalError, database_url, disk_is_full, new_id, shown_url
from .hosts import Hosts
from .jobs import Jobs, QueueFull
from .lifecycle import Lifecycle
from .listener import CANCEL_CHANNEL, LISTENER_NAME, CancelListener
from .migration import Migration
from .queue import JobNotStarted, Queue
from .uploads import UploadClaimed, Uploads
from .webhooks import Webhooks

__all__ = [
    "CANCEL_CHANNEL",
    "EVERY_SESSION",
    "LISTENER_NAME",
    "CancelListener",
    "ChangeWatch",
    "Error",
    "JobNotStarted",
    "OperationalError",
    "QueueFull",
    "Store",
    "UploadClaimed",
    "database_url",
    "disk_is_full",
    "shown_url",
    "new_id",
]


class Store(Jobs, Queue, Hosts, Lifecycle, Uploads, Access, Webhooks, Migration):
    """One database, as the rest of the service uses it: one object per
    database per process (one connection pool: `Store.shared`), with every
    query of the service as a method.

    It is made of one class per responsibility (the modules above), each a
    `Database` with its group of queries, rather than a facade in front of
    separate objects: callers keep one object and one name per query
    (`store.claim_next_variation(...)`), every part shares the one pool and
    its transactions without being handed them, and no method is written
    twice, once to do the work and once to pass it on. What two parts share
    beyond that (locking a job's row, settling a job) is a plain function in
    `jobs`, imported where it is used."""
