"""SCIM group members named before their user exists: scim_pending_members

RFC 7644 has no referential integrity: an identity provider may add a member before it creates the user. Such a
member is kept here and takes effect when a user of the same source arrives whose id, externalId or userName is
the value.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "scim_pending_members",
        sa.Column("group_id", _Id, nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("value_key", sa.String(length=500), nullable=False),
        sa.Column("display", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_scim_pending_members_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "value", name=op.f("pk_scim_pending_members")),
    )
    op.create_index(
        op.f("ix_scim_pending_members_source_value"), "scim_pending_members", ["source", "value"], unique=False
    )
    op.create_index(
        op.f("ix_scim_pending_members_source_value_key"), "scim_pending_members", ["source", "value_key"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_scim_pending_members_source_value_key"), table_name="scim_pending_members")
    op.drop_index(op.f("ix_scim_pending_members_source_value"), table_name="scim_pending_members")
    op.drop_table("scim_pending_members")
