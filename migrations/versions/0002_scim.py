"""SCIM: a unique userName per source among present users, indexed SCIM attribute values, members' display

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display", sa.String(length=500), nullable=True))
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.create_index(
            "uq_identities_source_user_name_present",
            ["source", "user_name_lower"],
            unique=True,
            sqlite_where=sa.text("present"),
            postgresql_where=sa.text("present"),
        )
    op.create_table(
        "scim_user_values",
        sa.Column("identity_id", _Id, nullable=False),
        sa.Column("path", sa.String(length=300), nullable=False),
        sa.Column("item", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=600), nullable=True),
        sa.Column("number", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name=op.f("fk_scim_user_values_identity_id_identities"),
            ondelete="CASCADE",
        ),
    )
    with op.batch_alter_table("scim_user_values", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scim_user_values_identity_id"), ["identity_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_scim_user_values_path_key"), ["path", "key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("scim_user_values", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scim_user_values_path_key"))
        batch_op.drop_index(batch_op.f("ix_scim_user_values_identity_id"))
    op.drop_table("scim_user_values")
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.drop_index("uq_identities_source_user_name_present")
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_column("display")
