"""SQLite access: the schema, its migrations, and one function per query.

This is the only module that writes SQL. Every process (web workers, the
supervisor, pool workers, the cleanup daemon) opens its own connection with
`connect()`; WAL mode lets readers and one writer work side by side.

Times are stored as Unix seconds (REAL) and paths relative to DATA_DIR.
Job status changes go through `_transition_job`, the single place that knows
which changes are allowed.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

JOB_STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
FINAL_JOB_STATUSES = ("completed", "failed", "cancelled")
VARIATION_STATUSES = ("queued", "processing", "completed", "failed", "cancelled")

# Which job status may follow which; anything else is a bug or a lost race.
_JOB_TRANSITIONS = {
    "processing": ("queued",),
    "completed": ("processing",),
    "failed": ("queued", "processing"),
    "cancelled": ("queued", "processing"),
}

MIGRATIONS: list[str] = [
    # 1: the initial schema
    """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('queued','processing','completed','failed','cancelled')),
        variations_per_video INTEGER NOT NULL,
        seed TEXT NOT NULL,
        progress INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        thumbnail_path TEXT,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        cancel_requested_at REAL,
        cancelled_at REAL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX jobs_status_created ON jobs (status, created_at);
    CREATE TABLE source_files (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        upload_path TEXT,
        duration REAL,
        media TEXT NOT NULL DEFAULT '{}',
        UNIQUE (job_id, position)
    );
    CREATE TABLE variations (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        file_id TEXT NOT NULL REFERENCES source_files (id) ON DELETE CASCADE,
        variation_index INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued','processing','completed','failed','cancelled')),
        attempts INTEGER NOT NULL DEFAULT 0,
        progress INTEGER NOT NULL DEFAULT 0,
        effects TEXT NOT NULL,
        name TEXT NOT NULL,
        output_path TEXT NOT NULL,
        size INTEGER,
        worker_pid INTEGER,
        ffmpeg_pid INTEGER,
        error TEXT,
        dispatched_at REAL,
        started_at REAL,
        finished_at REAL,
        UNIQUE (file_id, variation_index)
    );
    CREATE INDEX variations_job_status ON variations (job_id, status);
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        last_used_at REAL
    );
    """,
    # 2: failures counted apart from interruptions (a restart is not the encode's fault)
    """
    ALTER TABLE variations ADD COLUMN failures INTEGER NOT NULL DEFAULT 0
    """,
    # 3: rate-limit counters shared by every web worker (login throttling)
    """
    CREATE TABLE rate_limits (
        key TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        expires_at REAL NOT NULL
    )
    """,
    # 4: an estimate of each variation's encoding cost, to start the longest first
    """
    ALTER TABLE variations ADD COLUMN est_cost REAL NOT NULL DEFAULT 0
    """,
]


# --- connections and schema -------------------------------------------------

def connect(db_path: str | Path) -> sqlite3.Connection:
    """Open a connection with the settings every process needs."""
    conn = sqlite3.connect(str(db_path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, so read-modify-write sequences are atomic."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def schema_version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return row[0] or 0


def use_wal(conn: sqlite3.Connection, timeout: float = 30) -> None:
    """Switch the database to WAL (it stays so). Several processes starting at
    once may try together, and the switch answers "database is locked" at once
    instead of waiting for the busy timeout: retry until one has made it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the database; safe to call from many processes."""
    use_wal(conn)
    schema_version(conn)
    with transaction(conn):
        current = schema_version(conn)
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= current:
                continue
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
    return len(MIGRATIONS)


def _rows(cursor: sqlite3.Cursor) -> list[dict]:
    return [dict(r) for r in cursor.fetchall()]


def _row(cursor: sqlite3.Cursor) -> dict | None:
    r = cursor.fetchone()
    return dict(r) if r is not None else None


# --- jobs: creation and reading ---------------------------------------------

def create_job(conn: sqlite3.Connection, job: dict, files: Iterable[dict], variations: Iterable[dict]) -> None:
    """Insert a queued job with its source files and variations, all or nothing."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO jobs (id, status, variations_per_video, seed, thumbnail_path, created_at, expires_at)"
            " VALUES (:id, 'queued', :variations_per_video, :seed, :thumbnail_path, :created_at, :expires_at)",
            job,
        )
        conn.executemany(
            "INSERT INTO source_files (id, job_id, position, name, size, upload_path, duration, media)"
            " VALUES (:id, :job_id, :position, :name, :size, :upload_path, :duration, :media)",
            [dict(f, job_id=job["id"], media=json.dumps(f.get("media", {}))) for f in files],
        )
        conn.executemany(
            "INSERT INTO variations (id, job_id, file_id, variation_index, status, effects, name, output_path,"
            " est_cost) VALUES (:id, :job_id, :file_id, :variation_index, 'queued', :effects, :name,"
            " :output_path, :est_cost)",
            [{"est_cost": 0, **v, "job_id": job["id"], "effects": json.dumps(v["effects"])} for v in variations],
        )


def count_unfinished_jobs(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('queued','processing')").fetchone()[0]


def get_job(conn: sqlite3.Connection, job_id: str) -> dict | None:
    return _row(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)))


def get_job_files(conn: sqlite3.Connection, job_id: str) -> list[dict]:
    files = _rows(conn.execute("SELECT * FROM source_files WHERE job_id = ? ORDER BY position", (job_id,)))
    for f in files:
        f["media"] = json.loads(f["media"])
    return files


def get_job_variations(conn: sqlite3.Connection, job_id: str) -> list[dict]:
    variations = _rows(conn.execute(
        "SELECT v.* FROM variations v JOIN source_files f ON f.id = v.file_id"
        " WHERE v.job_id = ? ORDER BY f.position, v.variation_index",
        (job_id,),
    ))
    for v in variations:
        v["effects"] = json.loads(v["effects"])
    return variations


def get_variation(conn: sqlite3.Connection, variation_id: str) -> dict | None:
    v = _row(conn.execute("SELECT * FROM variations WHERE id = ?", (variation_id,)))
    if v is not None:
        v["effects"] = json.loads(v["effects"])
    return v


def list_jobs(conn: sqlite3.Connection, limit: int = 50, status: str | None = None) -> list[dict]:
    """Newest first, with the counts the job list shows."""
    where, params = ("WHERE j.status = ?", [status]) if status else ("", [])
    return _rows(conn.execute(
        f"""
        SELECT j.*,
          (SELECT COUNT(*) FROM source_files f WHERE f.job_id = j.id) AS total_videos,
          (SELECT COUNT(*) FROM variations v WHERE v.job_id = j.id) AS total_variations,
          (SELECT COUNT(*) FROM variations v WHERE v.job_id = j.id AND v.status = 'completed')
             AS completed_variations,
          (SELECT json_group_array(name) FROM
             (SELECT name FROM source_files f WHERE f.job_id = j.id ORDER BY position)) AS file_names
        FROM jobs j {where}
        ORDER BY j.created_at DESC, j.seq DESC LIMIT ?
        """,
        (*params, limit),
    ))


def queue_counts(conn: sqlite3.Connection) -> dict:
    counts = dict(conn.execute(
        "SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued','processing') GROUP BY status"
    ).fetchall())
    return {"queued": counts.get("queued", 0), "processing": counts.get("processing", 0)}


# --- job state ----------------------------------------------------------------

def _transition_job(conn: sqlite3.Connection, job_id: str, status: str, **fields) -> bool:
    """Move a job to `status` if its current status allows it; True when it moved."""
    allowed = _JOB_TRANSITIONS[status]
    assignments = "".join(f", {name} = :{name}" for name in fields)
    previous = ",".join(f"'{s}'" for s in allowed)  # constants, never user input
    sql = f"UPDATE jobs SET status = :status{assignments} WHERE id = :job_id AND status IN ({previous})"
    cur = conn.execute(sql, {"status": status, "job_id": job_id, **fields})
    return cur.rowcount == 1


def claim_job(conn: sqlite3.Connection, job_id: str, now: float) -> bool:
    with transaction(conn):
        return _transition_job(conn, job_id, "processing", started_at=now)


def fail_job(conn: sqlite3.Connection, job_id: str, error: str, now: float, ttl_seconds: float) -> bool:
    """Fail a queued or processing job and every variation that has not finished."""
    with transaction(conn):
        moved = _transition_job(conn, job_id, "failed", error=error, finished_at=now,
                                expires_at=now + ttl_seconds)
        if moved:
            conn.execute(
                "UPDATE variations SET status = 'failed', error = COALESCE(error, ?), finished_at = ?"
                " WHERE job_id = ? AND status IN ('queued','processing')",
                (error, now, job_id),
            )
        return moved


def request_cancel(conn: sqlite3.Connection, job_id: str, now: float, ttl_seconds: float) -> dict | None:
    """Record a cancel. A queued job is cancelled at once; a processing one is
    marked so that no new variation starts, and settles when its running
    ffmpeg processes have stopped. Returns the job as it now stands."""
    with transaction(conn):
        job = get_job(conn, job_id)
        if job is None or job["status"] in FINAL_JOB_STATUSES:
            return job
        if job["cancel_requested_at"] is None:
            conn.execute("UPDATE jobs SET cancel_requested_at = ? WHERE id = ?", (now, job_id))
        conn.execute(
            "UPDATE variations SET status = 'cancelled', finished_at = ? WHERE job_id = ? AND status = 'queued'",
            (now, job_id),
        )
        if job["status"] == "queued":
            _transition_job(conn, job_id, "cancelled", cancelled_at=now, finished_at=now,
                            expires_at=now + ttl_seconds)
        else:
            _settle_job(conn, job_id, now, ttl_seconds)
        return get_job(conn, job_id)


def settle_job(conn: sqlite3.Connection, job_id: str, now: float, ttl_seconds: float) -> str | None:
    """Give a processing job its final status once none of its variations is
    queued or running. Returns the new status, or None if it is not settled."""
    with transaction(conn):
        return _settle_job(conn, job_id, now, ttl_seconds)


def _settle_job(conn: sqlite3.Connection, job_id: str, now: float, ttl_seconds: float) -> str | None:
    job = get_job(conn, job_id)
    if job is None or job["status"] != "processing":
        return None
    counts = dict(conn.execute(
        "SELECT status, COUNT(*) FROM variations WHERE job_id = ? GROUP BY status", (job_id,)
    ).fetchall())
    if counts.get("queued") or counts.get("processing"):
        return None
    total = sum(counts.values())
    completed = counts.get("completed", 0)
    fields = {"finished_at": now, "expires_at": now + ttl_seconds}
    if completed == total:
        status = "completed"  # completion wins, even over a cancel that came too late
        fields["progress"] = 100
    elif job["cancel_requested_at"] is not None:
        status = "cancelled"
        fields["cancelled_at"] = job["cancel_requested_at"]
    elif completed == 0:
        status = "failed"
        first_error = conn.execute(
            "SELECT error FROM variations WHERE job_id = ? AND error IS NOT NULL LIMIT 1", (job_id,)
        ).fetchone()
        fields["error"] = first_error[0] if first_error else "every variation failed"
    else:
        # Some variations failed, the rest are ready: the job is usable and the
        # failed files carry their own error.
        status = "completed"
        fields["progress"] = 100
    _transition_job(conn, job_id, status, **fields)
    return status


def update_job_progress(conn: sqlite3.Connection, job_id: str) -> int:
    """Recompute a job's overall progress, weighting each variation by its
    source's duration; it only ever rises."""
    row = conn.execute(
        """
        SELECT SUM(COALESCE(f.duration, 1) *
                   CASE WHEN v.status = 'completed' THEN 100 ELSE v.progress END),
               SUM(COALESCE(f.duration, 1))
        FROM variations v JOIN source_files f ON f.id = v.file_id
        WHERE v.job_id = ? AND v.status != 'cancelled'
        """,
        (job_id,),
    ).fetchone()
    done, total = row
    percent = int(done / total) if total else 0
    percent = min(percent, 99)  # 100 is reserved for a completed job
    conn.execute("UPDATE jobs SET progress = MAX(progress, ?) WHERE id = ? AND status = 'processing'",
                 (percent, job_id))
    return percent


def set_source_upload_path(conn: sqlite3.Connection, file_id: str, path: str | None) -> None:
    conn.execute("UPDATE source_files SET upload_path = ? WHERE id = ?", (path, file_id))


def delete_job(conn: sqlite3.Connection, job_id: str) -> bool:
    with transaction(conn):
        return conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 1


# --- the dispatcher's queries -------------------------------------------------

def active_jobs(conn: sqlite3.Connection) -> list[dict]:
    """Processing jobs, oldest first."""
    return _rows(conn.execute("SELECT * FROM jobs WHERE status = 'processing' ORDER BY created_at, seq"))


def oldest_queued_job(conn: sqlite3.Connection) -> dict | None:
    return _row(conn.execute(
        "SELECT * FROM jobs WHERE status = 'queued' ORDER BY created_at, seq LIMIT 1"
    ))


def next_queued_variations(conn: sqlite3.Connection, limit: int, exclude: Iterable[str] = ()) -> list[dict]:
    """Variations waiting to run in processing jobs that nobody cancelled: FIFO
    by job; within a job the costliest first (longest-first keeps the last
    encode of a job from running alone at the end)."""
    exclude = list(exclude)
    placeholders = ",".join("?" * len(exclude))
    extra = f"AND v.id NOT IN ({placeholders})" if exclude else ""
    rows = _rows(conn.execute(
        f"""
        SELECT v.*, j.seq AS job_seq, f.upload_path, f.duration, f.media
        FROM variations v
        JOIN jobs j ON j.id = v.job_id
        JOIN source_files f ON f.id = v.file_id
        WHERE v.status = 'queued' AND j.status = 'processing' AND j.cancel_requested_at IS NULL {extra}
        ORDER BY j.created_at, j.seq, v.est_cost DESC, f.position, v.variation_index
        LIMIT ?
        """,
        (*exclude, limit),
    ))
    for v in rows:
        v["effects"] = json.loads(v["effects"])
        v["media"] = json.loads(v["media"])
    return rows


def dispatch_variation(conn: sqlite3.Connection, variation_id: str, now: float) -> bool:
    """queued → processing, counting the attempt; False if it was cancelled meanwhile."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE variations SET status = 'processing', attempts = attempts + 1, progress = 0,"
            " dispatched_at = ?, worker_pid = NULL, ffmpeg_pid = NULL"
            " WHERE id = ? AND status = 'queued'"
            " AND (SELECT cancel_requested_at FROM jobs WHERE id = variations.job_id) IS NULL",
            (now, variation_id),
        )
        return cur.rowcount == 1


def record_variation_start(conn: sqlite3.Connection, variation_id: str, worker_pid: int,
                           ffmpeg_pid: int | None, now: float) -> None:
    conn.execute(
        "UPDATE variations SET worker_pid = ?, ffmpeg_pid = ?, started_at = COALESCE(started_at, ?)"
        " WHERE id = ? AND status = 'processing'",
        (worker_pid, ffmpeg_pid, now, variation_id),
    )


def record_variation_progress(conn: sqlite3.Connection, variation_id: str, progress: int) -> None:
    conn.execute(
        "UPDATE variations SET progress = MAX(progress, ?) WHERE id = ? AND status = 'processing'",
        (progress, variation_id),
    )


def complete_variation(conn: sqlite3.Connection, variation_id: str, size: int, now: float) -> bool:
    cur = conn.execute(
        "UPDATE variations SET status = 'completed', progress = 100, size = ?, finished_at = ?,"
        " error = NULL, ffmpeg_pid = NULL WHERE id = ? AND status = 'processing'",
        (size, now, variation_id),
    )
    return cur.rowcount == 1


def end_variation(conn: sqlite3.Connection, variation_id: str, status: str, now: float,
                  error: str | None = None, failed: bool = False) -> bool:
    """processing → failed | cancelled, or back to queued for another attempt.
    `failed` counts the attempt as the encode's own failure (not an interruption)."""
    assert status in ("failed", "cancelled", "queued")
    finished = None if status == "queued" else now
    cur = conn.execute(
        "UPDATE variations SET status = ?, error = ?, finished_at = ?, ffmpeg_pid = NULL,"
        " failures = failures + ?, progress = CASE WHEN ? = 'queued' THEN 0 ELSE progress END"
        " WHERE id = ? AND status = 'processing'",
        (status, error, finished, 1 if failed else 0, status, variation_id),
    )
    return cur.rowcount == 1


def running_variations(conn: sqlite3.Connection) -> list[dict]:
    return _rows(conn.execute("SELECT * FROM variations WHERE status = 'processing'"))


def job_is_cancel_requested(conn: sqlite3.Connection, job_id: str) -> bool:
    row = conn.execute("SELECT cancel_requested_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return row is None or row[0] is not None


def cancel_requested_jobs(conn: sqlite3.Connection) -> list[dict]:
    return _rows(conn.execute(
        "SELECT id, seq FROM jobs WHERE status = 'processing' AND cancel_requested_at IS NOT NULL"
    ))


def finished_jobs_with_uploads(conn: sqlite3.Connection) -> list[dict]:
    return _rows(conn.execute(
        "SELECT f.id, f.upload_path FROM source_files f JOIN jobs j ON j.id = f.job_id"
        " WHERE f.upload_path IS NOT NULL AND j.status IN ('completed','failed','cancelled')"
    ))


# --- lifecycle ------------------------------------------------------------------

def expired_jobs(conn: sqlite3.Connection, now: float) -> list[dict]:
    return _rows(conn.execute(
        "SELECT * FROM jobs WHERE status IN ('completed','failed','cancelled') AND expires_at <= ?"
        " ORDER BY expires_at", (now,)
    ))


def stale_queued_jobs(conn: sqlite3.Connection, now: float) -> list[dict]:
    return _rows(conn.execute("SELECT * FROM jobs WHERE status = 'queued' AND expires_at <= ?", (now,)))


def finished_jobs_oldest_first(conn: sqlite3.Connection) -> list[dict]:
    return _rows(conn.execute(
        "SELECT * FROM jobs WHERE status IN ('completed','failed','cancelled') ORDER BY finished_at, seq"
    ))


def all_job_ids(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT id FROM jobs").fetchall()}


def known_paths(conn: sqlite3.Connection, job_id: str) -> set[str]:
    """Every file path (relative to DATA_DIR) that a row of this job owns."""
    paths = set()
    for (p,) in conn.execute("SELECT thumbnail_path FROM jobs WHERE id = ?", (job_id,)):
        paths.add(p)
    for (p,) in conn.execute("SELECT upload_path FROM source_files WHERE job_id = ?", (job_id,)):
        paths.add(p)
    for (p,) in conn.execute(
        "SELECT output_path FROM variations WHERE job_id = ? AND status = 'completed'", (job_id,)
    ):
        paths.add(p)
    paths.discard(None)
    return paths


def used_bytes(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT COALESCE((SELECT SUM(size) FROM variations WHERE status = 'completed'), 0)"
        " + COALESCE((SELECT SUM(size) FROM source_files WHERE upload_path IS NOT NULL), 0)"
    ).fetchone()
    return row[0]


# --- rate limits -------------------------------------------------------------------

def rate_limit_incr(conn: sqlite3.Connection, key: str, expiry: float, amount: int, now: float) -> int:
    """Add to a fixed-window counter, starting a new window when the old one expired."""
    with transaction(conn):
        conn.execute("DELETE FROM rate_limits WHERE key = ? AND expires_at <= ?", (key, now))
        conn.execute(
            "INSERT INTO rate_limits (key, count, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET count = count + excluded.count",
            (key, amount, now + expiry),
        )
        return conn.execute("SELECT count FROM rate_limits WHERE key = ?", (key,)).fetchone()[0]


def rate_limit_get(conn: sqlite3.Connection, key: str, now: float) -> tuple[int, float]:
    """(count, window end) of a live counter; (0, now) when there is none."""
    row = conn.execute("SELECT count, expires_at FROM rate_limits WHERE key = ? AND expires_at > ?",
                       (key, now)).fetchone()
    return (row[0], row[1]) if row else (0, now)


def rate_limit_clear(conn: sqlite3.Connection, key: str | None = None) -> int:
    if key is None:
        return conn.execute("DELETE FROM rate_limits").rowcount
    return conn.execute("DELETE FROM rate_limits WHERE key = ?", (key,)).rowcount


def rate_limit_prune(conn: sqlite3.Connection, now: float) -> int:
    return conn.execute("DELETE FROM rate_limits WHERE expires_at <= ?", (now,)).rowcount


# --- API tokens ------------------------------------------------------------------

def create_api_token(conn: sqlite3.Connection, token_id: str, name: str, token_hash: str, now: float) -> None:
    conn.execute(
        "INSERT INTO api_tokens (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
        (token_id, name, token_hash, now),
    )


def find_api_token(conn: sqlite3.Connection, token_hash: str) -> dict | None:
    return _row(conn.execute("SELECT * FROM api_tokens WHERE token_hash = ?", (token_hash,)))


def list_api_tokens(conn: sqlite3.Connection) -> list[dict]:
    return _rows(conn.execute(
        "SELECT id, name, created_at, last_used_at FROM api_tokens ORDER BY created_at, id"
    ))


def touch_api_token(conn: sqlite3.Connection, token_id: str, now: float, granularity: float = 60) -> None:
    """Record use, but write at most once a minute per token."""
    conn.execute(
        "UPDATE api_tokens SET last_used_at = ? WHERE id = ?"
        " AND (last_used_at IS NULL OR last_used_at < ?)",
        (now, token_id, now - granularity),
    )


def delete_api_token(conn: sqlite3.Connection, token_id: str) -> bool:
    return conn.execute("DELETE FROM api_tokens WHERE id = ?", (token_id,)).rowcount == 1


def now() -> float:
    return time.time()


def new_id() -> str:
    """An opaque, URL-safe id (72 random bits). Never starts with '-' or '_',
    so it cannot pass for an option on a command line."""
    while True:
        candidate = secrets.token_urlsafe(9)
        if candidate[0] not in "-_":
            return candidate
