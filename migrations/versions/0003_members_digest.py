"""groups.members_digest: a digest of each group's recorded members, so an unchanged group is not compared again

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 17:25:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("members_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.drop_column("members_digest")
