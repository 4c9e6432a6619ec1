"""Conflicts as state (issue 13): the conflicts table, and managed_users indexed by external id (the binding)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conflicts",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("other", sa.String(length=255), nullable=True),
        sa.Column("inputs_digest", sa.String(length=32), nullable=True),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_conflicts")),
    )
    with op.batch_alter_table("managed_users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_managed_users_external_id"), ["external_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("managed_users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_managed_users_external_id"))
    op.drop_table("conflicts")
