"""The guard over time (issue 17): held_plans and deactivation_history

held_plans keeps each plan the deactivation guard held (its changes, the digest of its inputs, who approved or
rejected it); deactivation_history keeps every deactivation applied, for the guard's rolling window.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 00:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "held_plans",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("run_id", _Id, nullable=True),
        sa.Column("last_run_id", _Id, nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=32), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("deactivations", sa.Integer(), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("closed_run_id", _Id, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_plans")),
    )
    op.create_index(op.f("ix_held_plans_status"), "held_plans", ["status"], unique=False)
    op.create_table(
        "deactivation_history",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("run_id", _Id, nullable=True),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deactivation_history")),
    )
    op.create_index(op.f("ix_deactivation_history_at"), "deactivation_history", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_deactivation_history_at"), table_name="deactivation_history")
    op.drop_table("deactivation_history")
    op.drop_index(op.f("ix_held_plans_status"), table_name="held_plans")
    op.drop_table("held_plans")
