"""The store on its own: what every process relies on."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time

import pytest
import sqlalchemy as sa
from sqlalchemy import update

from refresher import rules
from refresher.store import JobNotStarted, QueueFull, Store, new_id
from refresher.store.schema import jobs

from .conftest import sql


def newest_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "refresher.store:migrations")
    return ScriptDirectory.from_config(config).get_current_head()


def _migrate(db_path, start) -> None:
    start.wait()
    Store(db_path).migrate()


def test_processes_starting_together_all_migrate_a_fresh_database(tmp_path):
    """The web workers and the supervisor of a first start all open a database
    that does not exist yet; switching it to WAL and migrating must not fail
    any of them."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(20):
        db_path = tmp_path / f"fresh{round_}.db"
        start = ctx.Event()
        processes = [ctx.Process(target=_migrate, args=(db_path, start)) for _ in range(6)]
        for p in processes:
            p.start()
        start.set()
        for p in processes:
            p.join(60)
        assert [p.exitcode for p in processes] == [0] * 6
        store = Store(db_path)
        assert sql(store, "PRAGMA journal_mode") == [("wal",)]
        assert sql(store, "SELECT version_num FROM alembic_version") == [(newest_revision(),)]
        store.close()


# The schema the service used before Alembic (its schema_version 4), as such a
# database holds it.
LEGACY_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1), (2), (3), (4);
CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, status TEXT NOT NULL
  CHECK (status IN ('queued','processing','completed','failed','cancelled')), variations_per_video INTEGER NOT NULL,
  seed TEXT NOT NULL, progress INTEGER NOT NULL DEFAULT 0, error TEXT, thumbnail_path TEXT, created_at REAL NOT NULL,
  started_at REAL, finished_at REAL, cancel_requested_at REAL, cancelled_at REAL, expires_at REAL NOT NULL);
CREATE INDEX jobs_status_created ON jobs (status, created_at);
CREATE TABLE source_files (id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  position INTEGER NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL, upload_path TEXT, duration REAL,
  media TEXT NOT NULL DEFAULT '{}', UNIQUE (job_id, position));
CREATE TABLE variations (id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  file_id TEXT NOT NULL REFERENCES source_files (id) ON DELETE CASCADE, variation_index INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('queued','processing','completed','failed','cancelled')),
  attempts INTEGER NOT NULL DEFAULT 0, progress INTEGER NOT NULL DEFAULT 0, effects TEXT NOT NULL, name TEXT NOT NULL,
  output_path TEXT NOT NULL, size INTEGER, worker_pid INTEGER, ffmpeg_pid INTEGER, error TEXT, dispatched_at REAL,
  started_at REAL, finished_at REAL, failures INTEGER NOT NULL DEFAULT 0, est_cost REAL NOT NULL DEFAULT 0,
  UNIQUE (file_id, variation_index));
CREATE INDEX variations_job_status ON variations (job_id, status);
CREATE TABLE api_tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
  created_at REAL NOT NULL, last_used_at REAL);
CREATE TABLE rate_limits (key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires_at REAL NOT NULL);
INSERT INTO jobs VALUES (1, 'old-job', 'processing', 2, 'seed', 40, NULL, NULL, 1, 2, NULL, NULL, NULL, 99999999999);
INSERT INTO source_files VALUES ('f', 'old-job', 0, 'ad.mp4', 10, 'jobs/old-job/source_f', 6.0, '{}');
INSERT INTO variations (id, job_id, file_id, variation_index, status, attempts, failures, effects, name, output_path)
  VALUES ('v1', 'old-job', 'f', 1, 'completed', 1, 0, '{}', 'ad_var1.mp4', 'jobs/old-job/v1.mp4'),
         ('v2', 'old-job', 'f', 2, 'queued', 3, 1, '{}', 'ad_var2.mp4', 'jobs/old-job/v2.mp4');
INSERT INTO api_tokens VALUES ('t', 'nightly', 'hash', 1, NULL);
"""


def test_a_database_from_before_alembic_is_adopted_with_its_data(tmp_path):
    db_path = tmp_path / "refresher.db"
    with sqlite3.connect(db_path) as conn:
        conn.executescript(LEGACY_SCHEMA)
    store = Store(db_path)
    store.migrate()
    assert sql(store, "SELECT version_num FROM alembic_version") == [(newest_revision(),)]
    assert not sql(store, "SELECT name FROM sqlite_master WHERE name = 'schema_version'")
    assert [t["name"] for t in store.list_api_tokens()] == ["nightly"]
    job = store.get_job("old-job")
    assert (job["status"], job["progress"]) == ("processing", 40)
    by_id = {v["id"]: v for v in store.get_job_variations("old-job")}
    assert by_id["v1"]["status"] == "completed"
    # two of its three attempts were interruptions, counted as such from now on
    assert (by_id["v2"]["attempts"], by_id["v2"]["failures"], by_id["v2"]["interruptions"]) == (3, 1, 2)
    store.migrate()  # and again: nothing to do


def test_the_migrations_build_exactly_the_schema_the_code_declares(tmp_path):
    """A new database gets the declared schema at once; an older one gets it
    through the migrations. The two must never drift apart."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from refresher.store.migration import alembic_config
    from refresher.store.schema import metadata

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()


def test_deleting_an_adopted_job_still_takes_its_rows_along(tmp_path):
    db_path = tmp_path / "refresher.db"
    with sqlite3.connect(db_path) as conn:
        conn.executescript(LEGACY_SCHEMA)
    store = Store(db_path)
    store.migrate()
    assert store.delete_job("old-job")
    assert sql(store, "SELECT COUNT(*) FROM variations") == [(0,)]
    assert sql(store, "SELECT COUNT(*) FROM source_files") == [(0,)]


def _job(store: Store, sources: int, per_source: int, name: str = "job") -> tuple[str, list[str]]:
    now = time.time()
    job_id = new_id()
    files = [
        {
            "id": new_id(),
            "position": i,
            "name": f"{name}{i}.mp4",
            "size": 1,
            "upload_path": f"u{i}",
            "duration": 1.0,
            "media": {},
        }
        for i in range(sources)
    ]
    rows = [
        {
            "id": new_id(),
            "file_id": f["id"],
            "variation_index": index,
            "effects": {},
            "name": "x.mp4",
            "output_path": "x.mp4",
            "est_cost": 1.0,
        }
        for f in files
        for index in range(1, per_source + 1)
    ]
    store.create_job(
        {
            "id": job_id,
            "variations_per_video": per_source,
            "seed": "s",
            "thumbnail_path": None,
            "created_at": now,
            "expires_at": now + 60,
        },
        files,
        rows,
    )
    return job_id, [f["id"] for f in files]


def _claim(store: Store) -> dict | None:
    """As the supervisor claims: a queued job is started first."""
    try:
        return store.claim_next_variation("here", time.time())
    except JobNotStarted as waiting:
        assert store.start_job(waiting.job["id"], time.time())
        return store.claim_next_variation("here", time.time())


def test_claims_interleave_sources_and_let_jobs_take_turns(database):
    store = Store(database)
    store.migrate()
    big, big_files = _job(store, sources=3, per_source=20, name="big")
    small, _ = _job(store, sources=1, per_source=1, name="small")
    first = [_claim(store) for _ in range(2)]
    # the big job is older: its first claim; then the small one's turn
    assert [t["job_id"] for t in first] == [big, small]
    for task in first:
        store.record_outcome(task["id"], "completed", time.time(), 60, size=1)
    order = [_claim(store) for _ in range(5)]
    for task in order:
        store.record_outcome(task["id"], "completed", time.time(), 60, size=1)
    claimed = [first[0], *order]
    # one variation of every source before the second of any
    assert [(big_files.index(t["file_id"]), t["variation_index"]) for t in claimed] == [
        (0, 1),
        (1, 1),
        (2, 1),
        (0, 2),
        (1, 2),
        (2, 2),
    ]


def test_a_cancelled_job_gives_no_more_claims_and_settles_when_its_last_attempt_ends(database):
    store = Store(database)
    store.migrate()
    job_id, _ = _job(store, sources=1, per_source=3)
    running = _claim(store)
    now = time.time()
    assert store.request_cancel(job_id, now, 60)["status"] == "processing"
    assert store.claim_next_variation("here", now) is None
    assert store.record_outcome(running["id"], "cancelled", now, 60) == (job_id, "cancelled")
    job = store.get_job(job_id)
    assert (job["status"], job["progress"], job["cancelled_at"]) == ("cancelled", 0, now)


def test_every_store_operation_a_job_goes_through(database):
    """One job's whole life on the store: create, list, claim, progress,
    outcomes with a retry, settle, expire; the same on both engines."""
    store = Store(database)
    store.migrate()
    store.migrate()  # a second start finds it done
    job_id, files = _job(store, sources=2, per_source=1)
    assert store.queue_counts() == {"queued": 1, "processing": 0}
    [listed] = store.list_jobs()
    assert (listed["id"], listed["file_names"], listed["total_variations"]) == (job_id, ["job0.mp4", "job1.mp4"], 2)
    first, second = _claim(store), _claim(store)
    assert store.get_job(job_id)["status"] == "processing" and _claim(store) is None
    store.record_start(first["id"], 10, 11, time.time())
    store.record_progress({first["id"]: 40, second["id"]: 250})
    store.roll_up_progress()
    assert store.get_job(job_id)["progress"] == 69  # (40 + 99) / 2, never 100 while running
    assert store.record_outcome(first["id"], "failed", time.time(), 60, error="exit 1") == (job_id, None)
    assert store.get_variation(first["id"])["status"] == "queued", "a failed attempt is tried once more"
    again = _claim(store)
    assert again["id"] == first["id"] and again["attempts"] == 2
    assert store.record_outcome(again["id"], "completed", time.time(), 60, size=5) == (job_id, None)
    assert store.record_outcome(second["id"], "completed", time.time(), 60, size=7) == (job_id, "completed")
    job = store.get_job(job_id)
    assert (job["status"], job["progress"]) == ("completed", 100)
    assert store.known_paths(job_id) == {"u0", "u1", "x.mp4"}
    assert store.expired_jobs(time.time()) == [] and store.expired_jobs(time.time() + 61)[0]["id"] == job_id
    assert store.delete_job(job_id) and store.get_job(job_id) is None and store.all_job_ids() == set()


def test_progress_is_recorded_as_the_rules_have_it_on_both_engines(database):
    """Progress rises only while an attempt runs and stays below 100; a report
    that arrives after its variation ended or went back to the queue, or for
    one that is gone, changes nothing."""
    store = Store(database)
    store.migrate()
    job_id, _ = _job(store, sources=1, per_source=2)
    first, second = _claim(store), _claim(store)
    store.record_progress({first["id"]: 40.7, second["id"]: 30})
    store.record_progress({first["id"]: 20})
    assert store.get_variation(first["id"])["progress"] == 40, "never backwards"
    store.record_outcome(second["id"], "failed", time.time(), 60, error="exit 1")
    store.record_outcome(first["id"], "completed", time.time(), 60, size=1)
    store.record_progress({first["id"]: 50, second["id"]: 70, "no-such-variation": 10})
    assert store.get_variation(first["id"])["progress"] == 100
    # back in the queue, it keeps the 30 % a client saw (not 70: it is not running)
    again = store.get_variation(second["id"])
    assert (again["status"], again["progress"]) == ("queued", 30)


def test_a_queued_job_fails_as_the_rules_have_it_on_both_engines(database):
    """A new job that cannot start fails with its variations; a retried one
    keeps the outputs it has (and its share), and only its queued variations
    fail. A job that is not queued is left alone."""
    store = Store(database)
    store.migrate()
    fresh, _ = _job(store, sources=1, per_source=2)
    assert store.fail_queued_job(fresh, "no disk", time.time(), 60)
    job = store.get_job(fresh)
    assert (job["status"], job["error"], job["progress"]) == ("failed", "no disk", 0)
    assert [(v["status"], v["error"]) for v in store.get_job_variations(fresh)] == [("failed", "no disk")] * 2
    assert not store.fail_queued_job(fresh, "again", time.time(), 60)
    assert store.get_job(fresh)["error"] == "no disk"

    retried, _ = _job(store, sources=1, per_source=2)
    made, doomed = _claim(store), _claim(store)
    store.record_outcome(made["id"], "completed", time.time(), 60, size=1)
    store.record_outcome(doomed["id"], "failed", time.time(), 60, error="exit 1")
    store.record_outcome(_claim(store)["id"], "failed", time.time(), 60, error="exit 1")
    assert store.reopen_job(retried, "retry", time.time(), 60)[0]["status"] == "queued"
    assert store.fail_queued_job(retried, "no disk", time.time(), 60)
    job = store.get_job(retried)
    assert (job["status"], job["error"], job["progress"]) == ("failed", "no disk", 50)
    assert {v["id"]: (v["status"], v["error"]) for v in store.get_job_variations(retried)} == {
        made["id"]: ("completed", None),
        doomed["id"]: ("failed", "no disk"),
    }


def test_only_finished_jobs_expire_or_are_evicted_on_both_engines(database):
    """Past its expiry, a finished job goes; a queued or running one is never
    offered to expiry or eviction (`rules.may_expire`)."""
    store = Store(database)
    store.migrate()
    running, _ = _job(store, sources=1, per_source=1, name="running")
    assert _claim(store)["job_id"] == running
    queued, _ = _job(store, sources=1, per_source=1, name="queued")
    done, _ = _job(store, sources=1, per_source=1, name="done")
    assert store.fail_queued_job(done, "no disk", time.time(), 0)
    later = time.time() + 61  # every job is past its expiry
    assert [j["id"] for j in store.expired_jobs(later)] == [done]
    assert [j["id"] for j in store.finished_jobs_oldest_first()] == [done]
    assert [j["id"] for j in store.stale_queued_jobs(later)] == [queued]


def test_a_whole_job_is_read_in_one_statement_on_both_engines(database):
    """What a status poll reads: the job, its files in order with their media,
    their variations in order with their effects, or None for no such job."""
    store = Store(database)
    store.migrate()
    job_id, files = _job(store, sources=3, per_source=2)
    other, _ = _job(store, sources=1, per_source=4, name="other")
    statements = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    job, found_files, found_variations = store.get_job_whole(job_id)
    assert len(statements) == 1
    assert job == store.get_job(job_id)
    assert [f["id"] for f in found_files] == files and all(f["media"] == {} for f in found_files)
    assert [(files.index(v["file_id"]), v["variation_index"]) for v in found_variations] == [
        (0, 1),
        (0, 2),
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    assert all(v["effects"] == {} for v in found_variations)
    assert (found_files, found_variations) == (store.get_job_files(job_id), store.get_job_variations(job_id))
    assert store.get_job_whole("no-such-job") is None
    assert len(store.get_job_whole(other)[2]) == 4


def test_the_change_watch_sees_every_commit_and_no_read_on_both_engines(database):
    """What lets an idle supervisor skip its queries: on SQLite the watch says
    "changed" after a commit by any other connection (this process's pool
    included) and not after reads; on PostgreSQL it always says so."""
    store = Store(database)
    store.migrate()
    watch = store.watch_changes()
    try:
        assert watch.changed(), "the first look knows nothing yet"
        if store.dialect != "sqlite":
            assert watch.changed() and watch.changed()
            return
        assert not watch.changed() and not watch.changed()
        job_id, _ = _job(store, sources=1, per_source=2)
        assert watch.changed() and not watch.changed()
        store.get_job_whole(job_id)
        with pytest.raises(JobNotStarted):
            store.claim_next_variation("here", time.time())
        assert not watch.changed(), "reads change nothing, nor a claim that finds the job not started"
        other = Store(database)  # another process's connection, as a web worker's
        _claim(other)
        other.close()
        assert watch.changed() and not watch.changed()
    finally:
        watch.close()


def test_retry_and_resume_reopen_a_finished_job_on_both_engines(database):
    store = Store(database)
    store.migrate()
    job_id, _ = _job(store, sources=1, per_source=2)
    made, doomed = _claim(store), _claim(store)
    store.record_outcome(made["id"], "completed", time.time(), 60, size=1)
    store.record_outcome(doomed["id"], "failed", time.time(), 60, error="exit 1")
    store.record_outcome(_claim(store)["id"], "failed", time.time(), 60, error="exit 1")
    assert store.get_job(job_id)["status"] == "completed"
    with pytest.raises(rules.IllegalTransition, match="only a cancelled job"):
        store.reopen_job(job_id, "resume", time.time(), 60)
    with pytest.raises(QueueFull):  # the cap an upload meets, under the same lock
        store.reopen_job(job_id, "retry", time.time(), 60, max_unfinished=0)
    assert store.get_job(job_id)["status"] == "completed", "a full queue leaves the job as it was"
    job = store.reopen_job(job_id, "retry", time.time(), 60, max_unfinished=1)[0]
    assert (job["status"], job["progress"], job["finished_at"], job["error"]) == ("queued", 50, None, None)
    row = store.get_variation(doomed["id"])
    assert (row["status"], row["failures"], row["error"], row["attempts"]) == ("queued", 0, None, 2)
    assert store.get_variation(made["id"])["status"] == "completed"
    with pytest.raises(rules.IllegalTransition, match="still queued"):
        store.reopen_job(job_id, "retry", time.time(), 60)
    assert _claim(store)["id"] == doomed["id"]
    assert store.request_cancel(job_id, time.time(), 60)["status"] == "processing"
    store.record_outcome(doomed["id"], "cancelled", time.time(), 60)
    assert store.get_job(job_id)["status"] == "cancelled"
    job = store.reopen_job(job_id, "resume", time.time(), 60)[0]
    assert (job["status"], job["cancel_requested_at"], job["cancelled_at"]) == ("queued", None, None)
    assert _claim(store)["id"] == doomed["id"], "a resumed job gives claims again"
    assert store.reopen_job("nope", "retry", time.time(), 60) is None


def test_a_job_s_revision_grows_with_every_change_and_survives_a_retry(database):
    """Whoever shows a job keeps the answer with the higher revision: it must
    grow with each change, also when a finished job goes back to the queue."""
    store = Store(database)
    store.migrate()
    job_id, _ = _job(store, sources=1, per_source=2)
    seen = [store.get_job(job_id)["revision"]]

    def changed() -> dict:
        job = store.get_job(job_id)
        assert job["revision"] > seen[-1], f"{job['status']}: revision {job['revision']} after {seen}"
        seen.append(job["revision"])
        return job

    first = _claim(store)
    assert changed()["status"] == "processing"
    second = _claim(store)
    store.record_outcome(first["id"], "completed", time.time(), 60, size=1)
    changed()
    for _ in range(2):  # a failed attempt is tried once more
        store.record_outcome(second["id"], "failed", time.time(), 60, error="exit 1")
        changed()
        if store.get_variation(second["id"])["status"] == "queued":
            second = _claim(store)
    assert store.get_job(job_id)["status"] == "completed"
    assert store.reopen_job(job_id, "retry", time.time(), 60)[0]["revision"] == changed()["revision"]
    assert seen[-1] == store.get_job(job_id)["revision"] and store.get_job(job_id)["status"] == "queued"
    assert store.list_jobs()[0]["revision"] == seen[-1]
    assert _claim(store)["id"] == second["id"] and changed()["status"] == "processing"
    store.record_progress({second["id"]: 50})
    store.roll_up_progress()
    assert changed()["progress"] == 75
    assert store.request_cancel(job_id, time.time(), 60)["status"] == "processing"
    changed()
    store.record_outcome(second["id"], "cancelled", time.time(), 60)
    assert changed()["status"] == "cancelled"
    assert store.reopen_job(job_id, "resume", time.time(), 60)[0]["status"] == "queued"
    changed()


def test_jobs_from_before_revisions_get_one_on_both_engines(database):
    """A database at revision 0006 (no job revisions yet) is migrated with its
    jobs: each starts at 0 and counts from there."""
    from alembic import command

    from refresher.store.migration import alembic_config

    store = Store(database)
    with store.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0006")
    sql(
        store,
        "INSERT INTO jobs (id, status, variations_per_video, seed, created_at, expires_at)"
        " VALUES ('old-job', 'failed', 1, 's', 1, 99999999999)",
    )
    store.migrate()
    assert sql(store, "SELECT version_num FROM alembic_version") == [(newest_revision(),)]
    assert store.get_job("old-job")["revision"] == 0
    assert store.list_jobs()[0]["revision"] == 0
    assert store.fail_queued_job("old-job", "x", time.time(), 60) is False  # not queued: nothing changes
    assert store.get_job("old-job")["revision"] == 0
    with store.writing() as conn:  # any change of the row counts, whichever statement makes it
        conn.execute(update(jobs).where(jobs.c.id == "old-job").values(error="changed"))
    assert store.get_job("old-job")["revision"] == 1
    store.close()


def test_tokens_and_rate_limits(database):
    store = Store(database)
    store.migrate()
    now = time.time()
    store.create_api_token("t1", "nightly", "hash1", now)
    assert store.find_api_token("hash1")["name"] == "nightly"
    store.touch_api_token("t1", now + 1)
    store.touch_api_token("t1", now + 2)  # within the minute: not written
    assert store.list_api_tokens()[0]["last_used_at"] == now + 1
    assert store.delete_api_token("t1") and not store.delete_api_token("t1")
    assert [store.rate_limit_incr("k", 60, 1, now) for _ in range(3)] == [1, 2, 3]
    assert store.rate_limit_get("k", now) == (3, now + 60)
    assert store.rate_limit_incr("k", 60, 1, now + 61) == 1, "a new window"
    assert store.rate_limit_clear() == 1
    # a secret is made once, and the maker knows it made it (it prints a generated password)
    assert store.secret("s", lambda: "first", now) == ("first", True)
    assert store.secret("s", lambda: "second", now) == ("first", False)


def test_a_host_id_is_held_by_one_run_at_a_time(database):
    store = Store(database)
    store.migrate()
    now = time.time()
    assert store.register_host("h", "run-1", "m", 10, now, 30) is None
    holder = store.register_host("h", "run-2", "m", 20, now + 1, 30)
    assert (holder["instance"], holder["pid"]) == ("run-1", 10), "a live holder keeps the id"
    assert store.heartbeat("h", "run-1", 10, now + 2) and not store.heartbeat("h", "run-2", 20, now + 2)
    assert not store.take_over_host("h", holder, "run-2", "m", 20, now + 3), "it beat since it was seen"
    assert store.register_host("h", "run-2", "m", 20, now + 40, 30) is None, "a silent holder loses it"
    assert not store.heartbeat("h", "run-1", 10, now + 41), "the old run learns it was taken over"
    store.forget_host("h", "run-1")
    assert [h["instance"] for h in store.live_hosts(now + 41, 30)] == ["run-2"], "only its own row"


def test_ended_sessions(database):
    store = Store(database)
    store.migrate()
    now = time.time()
    assert not store.session_ended("s1", now - 10)
    store.end_session("s1", now + 100, now)
    store.end_session("s1", now + 100, now)  # ending twice is harmless
    assert store.session_ended("s1", now - 10) and not store.session_ended("s2", now - 10)

    store.end_every_session(now + 1)
    assert store.session_ended("s2", now - 10) and store.session_ended("s3", now + 1)
    assert not store.session_ended("s4", now + 2), "a session begun afterwards is unaffected"
    store.end_every_session(now - 50)  # a slower call that began earlier does not move the mark back
    assert store.session_ended("s2", now - 10)

    store.end_session("s5", now + 300, now + 200)  # s1 has expired by now: its row goes
    rows = dict(sql(store, "SELECT id, expires_at FROM ended_sessions"))
    assert rows == {"s5": now + 300, "*": None}


def test_the_queue_cap_holds_under_concurrent_creation(database):
    """Twelve creations at once with room for two: exactly two get in."""
    import threading

    from refresher.store import QueueFull

    store = Store(database)
    store.migrate()
    results, start = [], threading.Barrier(12)

    def create():
        start.wait()
        try:
            _job(store, sources=1, per_source=1)
            results.append("in")
        except QueueFull:
            results.append("full")

    original = store.create_job
    store.create_job = lambda *a, **kw: original(*a, **kw, max_unfinished=2)
    threads = [threading.Thread(target=create) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["full"] * 10 + ["in"] * 2


def test_a_variation_another_host_is_claiming_is_passed_over_not_waited_for(postgres):
    """SKIP LOCKED in the pick itself: with the next variation locked by
    another host's claim, this host claims the one after it at once."""
    import threading

    from refresher.store.schema import variations

    url = postgres.new_database()
    store, other = Store(url), Store(url)
    store.migrate()
    job_id, _ = _job(store, sources=1, per_source=3)
    assert store.start_job(job_id, time.time())
    locked = store.get_job_variations(job_id)[0]["id"]  # the first in the claim order
    claimed = []
    with other.writing() as conn:  # the other host's claim, not committed yet
        conn.execute(variations.select().where(variations.c.id == locked).with_for_update())
        claiming = threading.Thread(target=lambda: claimed.append(store.claim_next_variation("here", time.time())))
        claiming.start()
        claiming.join(10)
        waited = claiming.is_alive()
    claiming.join()
    assert not waited, "the claim waited for the other host's lock"
    assert claimed[0] is not None and claimed[0]["id"] != locked
    assert store.get_variation(locked)["status"] == "queued"
    assert store.claim_next_variation("here", time.time())["id"] == locked, "once free, it was the next"
    other.close()


def test_a_host_presumed_dead_that_reports_after_all_changes_nothing(database):
    store = Store(database)
    store.migrate()
    job_id, _ = _job(store, sources=1, per_source=1)
    assert store.start_job(job_id, time.time())
    first = store.claim_next_variation("slow", time.time())
    # "slow" fell silent: its claim went back to the queue, and "quick" took it
    store.record_outcome(first["id"], "interrupted", time.time(), 60, host="slow")
    again = store.claim_next_variation("quick", time.time())
    assert again["id"] == first["id"]
    assert store.record_outcome(first["id"], "completed", time.time(), 60, size=5, host="slow") == (job_id, None)
    row = store.get_variation(first["id"])
    assert (row["status"], row["host"], row["size"]) == ("processing", "quick", None)
    assert store.record_outcome(first["id"], "completed", time.time(), 60, size=7, host="quick") == (
        job_id,
        "completed",
    )
    assert store.get_variation(first["id"])["size"] == 7


def test_hosts_claiming_at_once_each_get_their_own_variations(database):
    import threading

    stores = [Store(database) for _ in range(4)]
    stores[0].migrate()
    job_id, _ = _job(stores[0], sources=2, per_source=6)
    assert stores[0].start_job(job_id, time.time())
    claimed: list[str] = []
    start = threading.Barrier(len(stores))

    def host(store: Store, name: str) -> None:
        start.wait()
        while (task := store.claim_next_variation(name, time.time())) is not None:
            claimed.append(task["id"])

    threads = [threading.Thread(target=host, args=(s, f"host{i}")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(claimed) == len(set(claimed)) == 12
    assert stores[0].claim_next_variation("host0", time.time()) is None
    for s in stores:
        s.close()


def test_a_pooled_connection_the_server_ended_is_replaced_before_use(postgres):
    """No round trip per checkout (pool_pre_ping), yet a connection that
    PostgreSQL closed meanwhile (a restart, pg_terminate_backend) is never
    handed out: the pool looks at its socket instead."""
    url = postgres.new_database()
    store, other = Store(url), Store(url)
    store.migrate()
    with store.reading() as a, store.reading() as b:  # two connections in the pool
        a.exec_driver_sql("SELECT 1")
        b.exec_driver_sql("SELECT 1")
    with other.writing() as conn:
        ended = conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).all()
    assert len(ended) == 2
    time.sleep(0.5)  # the backends say goodbye and close their end
    for _ in range(3):
        assert store.get_job("no such job") is None
        assert store.list_jobs() == []
    other.close()
    store.close()


def test_the_cancel_listener_connects_with_the_database_url_s_own_parameters():
    """libpq's parameters, decoded, from whatever the URL holds: a user and a
    password with characters a URL must escape, a socket folder and a port
    in the query, an option such as sslmode, several hosts; and psycopg
    reads back from them exactly what they say."""
    import psycopg

    from refresher.store import database_url
    from refresher.store.listener import connection_params

    escaped = connection_params(
        database_url("postgres://us%40r:p%40ss%20w%25rd%2F'@db.example.com:6543/my%20db?sslmode=require")
    )
    assert escaped == {
        "user": "us@r",
        "password": "p@ss w%rd/'",
        "host": "db.example.com",
        "port": 6543,
        "dbname": "my db",
        "sslmode": "require",
    }
    assert psycopg.conninfo.conninfo_to_dict(psycopg.conninfo.make_conninfo(**escaped)) == {
        key: str(value) for key, value in escaped.items()
    }
    assert connection_params(database_url("postgresql://postgres@/t_1?host=/run/pg&port=5433")) == {
        "user": "postgres",
        "dbname": "t_1",
        "host": "/run/pg",
        "port": "5433",
    }
    assert connection_params("postgresql+psycopg://u@/db?host=a&host=b&port=1&port=2") == {
        "user": "u",
        "dbname": "db",
        "host": "a,b",
        "port": "1,2",
    }


def test_a_listener_hears_an_accepted_cancel(postgres):
    """On a connection of its own, made from the store's URL: a cancel of a
    job that runs is announced with its seq and id."""
    from refresher.store import LISTENER_NAME, CancelListener

    store = Store(postgres.new_database())
    store.migrate()
    job_id, _ = _job(store, sources=1, per_source=2)
    _claim(store)  # something runs: the job does not settle at once
    listener = CancelListener(store)
    listener.connect()
    try:
        assert listener.wait(0.1) == []
        assert sql(store, "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s", LISTENER_NAME) == [(1,)]
        job = store.request_cancel(job_id, time.time(), 60)
        assert job["status"] == "processing"
        assert listener.wait(5) == [(job["seq"], job_id)]
        listener.ping()
    finally:
        listener.close()
        store.close()
