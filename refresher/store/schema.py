"""The tables, as SQLAlchemy Core sees them after the newest migration.

Times are Unix seconds (floats), paths are relative to DATA_DIR, effects and
media descriptions are JSON text: the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
)

from .. import rules

metadata = MetaData()

_statuses = ",".join(f"'{s}'" for s in rules.JOB_STATUSES)
# SQLite's rowid alias must be INTEGER; PostgreSQL gets a 64-bit identity.
_seq_type = BigInteger().with_variant(Integer(), "sqlite")

jobs = Table(
    "jobs",
    metadata,
    Column("seq", _seq_type, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("status", Text, CheckConstraint(f"status IN ({_statuses})", name="jobs_status"), nullable=False),
    Column("variations_per_video", Integer, nullable=False),
    Column("seed", Text, nullable=False),
    Column("progress", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("thumbnail_path", Text),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("cancel_requested_at", Float),
    Column("cancelled_at", Float),
    Column("expires_at", Float, nullable=False),
    Column("name", Text),  # since revision 0005: the name given at upload, if any
    # since revision 0007: grows by one with every UPDATE of the row (SQLAlchemy
    # adds it to each update() that does not set it), so of two answers about a
    # job the one with the higher revision is the newer
    Column("revision", Integer, nullable=False, server_default="0", onupdate=literal_column("revision") + 1),
    # since revision 0008: where the job's end is announced, and how
    # its latest announcement went (`webhook_deliveries` holds each one)
    Column("webhook_url", Text),
    Column("webhook_attempts", Integer, nullable=False, server_default="0"),
    Column("webhook_delivered_at", Float),
    Column("webhook_error", Text),
    Index("jobs_status_created", "status", "created_at"),
    sqlite_autoincrement=True,
)

source_files = Table(
    "source_files",
    metadata,
    Column("id", Text, primary_key=True),
    Column("job_id", Text, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("upload_path", Text),
    Column("duration", Float),
    Column("media", Text, nullable=False, server_default="{}"),
    UniqueConstraint("job_id", "position"),
)

variations = Table(
    "variations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("job_id", Text, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("file_id", Text, ForeignKey("source_files.id", ondelete="CASCADE"), nullable=False),
    Column("variation_index", Integer, nullable=False),
    Column("status", Text, CheckConstraint(f"status IN ({_statuses})", name="variations_status"), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("progress", Integer, nullable=False, server_default="0"),
    Column("effects", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("output_path", Text, nullable=False),
    Column("size", BigInteger),
    Column("worker_pid", Integer),
    Column("ffmpeg_pid", Integer),
    Column("error", Text),
    Column("dispatched_at", Float),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("est_cost", Float, nullable=False, server_default="0"),
    # since revision 0002
    Column("interruptions", Integer, nullable=False, server_default="0"),
    Column("host", Text),
    UniqueConstraint("file_id", "variation_index"),
    Index("variations_job_status", "job_id", "status"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", Text, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("expires_at", Float, nullable=False),
)

# since revision 0003
hosts = Table(
    "hosts",
    metadata,
    Column("id", Text, primary_key=True),  # HOST_ID
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    # since revision 0006
    Column("instance", Text),  # this run of the supervisor that holds the id
    Column("machine", Text),  # where its pid means it: kernel boot + pid namespace
)

secrets = Table(
    "secrets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# since revision 0004
ended_sessions = Table(
    "ended_sessions",
    metadata,
    # a session's id, or "*": every session begun at or before ended_at
    Column("id", Text, primary_key=True),
    Column("ended_at", Float, nullable=False),
    # the session would have expired by then, so the row may go ("*": never)
    Column("expires_at", Float),
)

# since revision 0008: one row per announcement of a job's end (a job
# that is retried or resumed may end, and be announced, again). `id` is the
# webhook-id every attempt carries; `body` is fixed by the first attempt;
# `next_attempt_at` is when it is due — while an attempt runs, the end of the
# host's claim on it — and NULL once it was delivered or given up.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Text, primary_key=True),
    Column("job_id", Text, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("event", Text, nullable=False),  # job.completed, job.failed, job.cancelled
    Column("occurred_at", Float, nullable=False),
    Column("body", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Float),
    Column("delivered_at", Float),
    Column("last_error", Text),
    Index("webhook_deliveries_due", "next_attempt_at"),
    Index("webhook_deliveries_job", "job_id"),
)

# since revision 0009: resumable uploads (the tus protocol at /api/uploads)
uploads = Table(
    "uploads",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),  # the file name the client gave, sanitized
    Column("metadata", Text, nullable=False, server_default=""),  # Upload-Metadata as sent, given back on HEAD
    Column("length", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False, server_default="0"),  # the upload's offset
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    # who is receiving a PATCH ("<machine> <pid> <nonce>"), until when at the latest
    Column("holder", Text),
    Column("held_until", Float),
    # object storage: the multipart upload, its parts so far (JSON), and the
    # bytes waiting in the tail object for a part of the minimum size
    Column("multipart", Text),
    Column("parts", Text, nullable=False, server_default="[]"),
    Column("tail", BigInteger, nullable=False, server_default="0"),
    # once complete: its probe (JSON, as source_files.media with its duration),
    # or why it is not accepted (JSON {"code", "error"}), and its thumbnail's key
    Column("probe", Text),
    Column("refusal", Text),
    Column("thumbnail", Text),
    Column("job_id", Text),  # the job made from it: it is no upload any more
    Index("uploads_expires", "expires_at"),
)
