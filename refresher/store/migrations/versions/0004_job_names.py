"""Jobs may carry the name they were given at upload.

Revision ID: 0004_job_names
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_job_names"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("name", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("name")
