"""Which process holds a host id: a random id per supervisor run, and the
machine (kernel boot and pid namespace) where its pid can be checked.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("instance", sa.Text))
        batch.add_column(sa.Column("machine", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("machine")
        batch.drop_column("instance")
