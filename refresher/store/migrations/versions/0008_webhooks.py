"""Webhooks: a job may name a URL to be told when it ends; each announcement
of an end is a row of `webhook_deliveries`, and the job shows how its latest
one went.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("webhook_url", sa.Text))
    op.add_column("jobs", sa.Column("webhook_attempts", sa.Integer, nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("webhook_delivered_at", sa.Float))
    op.add_column("jobs", sa.Column("webhook_error", sa.Text))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("job_id", sa.Text, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("occurred_at", sa.Float, nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float),
        sa.Column("delivered_at", sa.Float),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("webhook_deliveries_due", "webhook_deliveries", ["next_attempt_at"])
    op.create_index("webhook_deliveries_job", "webhook_deliveries", ["job_id"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("jobs") as batch:
        for column in ("webhook_error", "webhook_delivered_at", "webhook_attempts", "webhook_url"):
            batch.drop_column(column)
