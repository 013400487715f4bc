"""Resumable uploads: one row per upload of the tus protocol, so that any web
process (and a restarted one) can continue it.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False, server_default=""),
        sa.Column("length", sa.BigInteger, nullable=False),
        sa.Column("received", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("holder", sa.Text),
        sa.Column("held_until", sa.Float),
        sa.Column("multipart", sa.Text),
        sa.Column("parts", sa.Text, nullable=False, server_default="[]"),
        sa.Column("tail", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("probe", sa.Text),
        sa.Column("refusal", sa.Text),
        sa.Column("thumbnail", sa.Text),
        sa.Column("job_id", sa.Text),
    )
    op.create_index("uploads_expires", "uploads", ["expires_at"])


def downgrade() -> None:
    op.drop_table("uploads")
