"""Row digests: identities.digest and groups.digest (of the values a pull compares), managed_users.applied_digest

A full pull compares each recorded row by its digest and reads a row's values only when the digest differs; a
reconcile reads a managed user's applied fields only when their digest differs from the desired fields'. Rows
written before this revision have no digest: they are compared in full once, and given one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("identities", "groups"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("digest", sa.String(length=32), nullable=True))
    with op.batch_alter_table("managed_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("applied_digest", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("managed_users", schema=None) as batch_op:
        batch_op.drop_column("applied_digest")
    for table in ("groups", "identities"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("digest")
