"""The schema as it stood before Alembic (the old schema_version 4).

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = "'queued','processing','completed','failed','cancelled'"
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("status", sa.Text, sa.CheckConstraint(f"status IN ({STATUSES})", name="jobs_status"), nullable=False),
        sa.Column("variations_per_video", sa.Integer, nullable=False),
        sa.Column("seed", sa.Text, nullable=False),
        sa.Column("progress", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.Column("thumbnail_path", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("cancel_requested_at", sa.Float),
        sa.Column("cancelled_at", sa.Float),
        sa.Column("expires_at", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("jobs_status_created", "jobs", ["status", "created_at"])
    op.create_table(
        "source_files",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("job_id", sa.Text, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("upload_path", sa.Text),
        sa.Column("duration", sa.Float),
        sa.Column("media", sa.Text, nullable=False, server_default="{}"),
        sa.UniqueConstraint("job_id", "position"),
    )
    op.create_table(
        "variations",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("job_id", sa.Text, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("file_id", sa.Text, sa.ForeignKey("source_files.id", ondelete="CASCADE"), nullable=False),
        sa.Column("variation_index", sa.Integer, nullable=False),
        sa.Column(
            "status", sa.Text, sa.CheckConstraint(f"status IN ({STATUSES})", name="variations_status"), nullable=False
        ),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("progress", sa.Integer, nullable=False, server_default="0"),
        sa.Column("effects", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("output_path", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger),
        sa.Column("worker_pid", sa.Integer),
        sa.Column("ffmpeg_pid", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("dispatched_at", sa.Float),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("est_cost", sa.Float, nullable=False, server_default="0"),
        sa.UniqueConstraint("file_id", "variation_index"),
    )
    op.create_index("variations_job_status", "variations", ["job_id", "status"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float),
    )
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("rate_limits", "api_tokens", "variations", "source_files", "jobs"):
        op.drop_table(table)
