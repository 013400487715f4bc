"""Interruptions counted on their own; the host that claimed a variation.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("variations") as batch:
        batch.add_column(sa.Column("interruptions", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("host", sa.Text))
    # Until now every attempt that was not a failure counted as an interruption,
    # a running one included (its interruption is counted when it is recovered).
    op.execute(
        "UPDATE variations SET interruptions = attempts - failures"
        " - CASE WHEN status = 'processing' THEN 1 ELSE 0 END"
        " WHERE status IN ('queued','processing') AND attempts > failures"
    )


def downgrade() -> None:
    with op.batch_alter_table("variations") as batch:
        batch.drop_column("host")
        batch.drop_column("interruptions")
