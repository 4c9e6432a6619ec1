"""Members digests that update by difference, and source_index: the content sync index of each LDAP source

groups.members_digest becomes the sum modulo 2^256 of a BLAKE2b-256 hash of each recorded member's line
`external_id TAB via` (syncd/store/members_digest.py), so that a group that gained or lost one member gets its new
digest from the old one. The digests of the groups recorded so far are recomputed here once, from the memberships
table (which holds exactly the members a digest covers); their row digests are cleared, so that the next pull
compares those rows in full once and stores new ones without reporting a change.

source_index holds, per LDAP source, what its content sync (RFC 4533, DirSync) cookie goes with: the directory
index as of that cookie, as a base and the deltas recorded since. A new process continues the content sync from it
instead of reading the whole directory.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 01:00:00
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_MODULUS = 1 << 256


def _line_hash(member: str, via: str | None) -> int:
    """syncd.store.members_digest.line_hash as of this revision (kept here: a migration must not change later)."""
    return int.from_bytes(hashlib.blake2b(f"{member}\t{via or ''}".encode(), digest_size=32).digest(), "big")


def _recompute_members_digests(conn: sa.Connection) -> None:
    groups = sa.table("groups", sa.column("id"), sa.column("members_digest"), sa.column("digest"))
    identities = sa.table("identities", sa.column("id"), sa.column("external_id"))
    memberships = sa.table("memberships", sa.column("group_id"), sa.column("identity_id"), sa.column("via"))
    wanted = [row[0] for row in conn.execute(sa.select(groups.c.id).where(groups.c.members_digest.is_not(None)))]
    if not wanted:
        return
    totals: defaultdict[int, int] = defaultdict(int)
    pairs = sa.select(memberships.c.group_id, identities.c.external_id, memberships.c.via).select_from(
        memberships.join(identities, identities.c.id == memberships.c.identity_id)
    )
    for part in conn.execute(pairs).partitions(20_000):
        for group_id, external_id, via in part:
            totals[group_id] += _line_hash(external_id, via)
    conn.execute(
        sa.update(groups)
        .where(groups.c.id == sa.bindparam("b_id"))
        .values(members_digest=sa.bindparam("b_digest"), digest=None),
        [{"b_id": group_id, "b_digest": f"{totals[group_id] % _MODULUS:064x}"} for group_id in wanted],
    )


def upgrade() -> None:
    op.create_table(
        "source_index",
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("source", "seq", name=op.f("pk_source_index")),
    )
    _recompute_members_digests(op.get_bind())


def downgrade() -> None:
    op.drop_table("source_index")
    groups = sa.table("groups", sa.column("members_digest"), sa.column("digest"))
    op.get_bind().execute(sa.update(groups).values(members_digest=None, digest=None))
