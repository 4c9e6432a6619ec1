"""Recording what a source says: snapshots of identities, groups and memberships, and each source's state.

A snapshot is recorded in one transaction with bulk statements (100,000 identities in a few seconds), and only when
it is complete: an incomplete snapshot changes nothing, so the previous state stands.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from types import MappingProxyType
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Text, bindparam, cast, delete, func, insert, select, update

from syncd.model import Group, Identity, Snapshot
from syncd.store.db import in_chunks
from syncd.store.members_digest import MembersDigest
from syncd.store.tables import groups, identities, memberships, source_index, source_state

__all__ = ["IncompleteSnapshot", "RecordResult", "SourceState", "SourceStore"]

T = TypeVar("T")

#: membership rows inserted per statement
_INSERT_CHUNK = 50_000
_IDENTITY_FIELDS = ("user_id", "email", "display_name", "active", "dn", "overrides")
_GROUP_FIELDS = ("name", "dn", "grant", "members_digest")


class IncompleteSnapshot(Exception):
    """A snapshot that must not be recorded: incomplete, or suddenly empty where the store holds entries."""


@dataclass(frozen=True, slots=True)
class SourceState:
    """What the store knows of one source's pulls."""

    source: str
    high_water_mark: str | None = None
    last_full_at: datetime | None = None
    last_success_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_error: str | None = None
    counters: Mapping[str, int] = field(default_factory=dict)
    #: the RFC 4533 cookies of the last content-synced pull recorded (opaque text)
    sync_cookie: str | None = None


@dataclass(slots=True)
class RecordResult:
    """What recording one snapshot changed in the store."""

    source: str
    identities_added: int = 0
    identities_updated: int = 0
    identities_removed: int = 0
    groups_added: int = 0
    groups_updated: int = 0
    groups_removed: int = 0
    memberships_added: int = 0
    memberships_removed: int = 0
    #: the LiteLLM user_ids whose identity or memberships changed (for a targeted reconcile)
    affected_user_ids: set[str] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        """True when anything at all changed."""
        return bool(self.affected_user_ids) or any((self.groups_added, self.groups_updated, self.groups_removed))


def _now() -> datetime:
    return datetime.now(UTC)


def _overrides(text: str | None) -> dict[str, Any]:
    """A stored overrides column (JSON text); most people have none."""
    return json.loads(text) if text and text != "{}" else {}


def _identity_values(identity: Identity) -> dict[str, Any]:
    return {
        "user_id": identity.user_id,
        "email": identity.email,
        "display_name": identity.display_name,
        "active": identity.active,
        "dn": identity.dn,
        "overrides": dict(identity.overrides),
        "email_lower": identity.email.lower(),
    }


def _group_values(group: Group, members_digest: str) -> dict[str, Any]:
    return {
        "name": group.name,
        "dn": group.dn,
        "grant": dict(group.grant),
        "members_digest": members_digest,
        "name_lower": group.name.lower(),
        "dn_lower": group.dn.lower() if group.dn else None,
    }


def row_digest(values: Iterable[Any]) -> str:
    """The digest of a row's compared values, in their field order: the repr of plain values (dicts as sorted JSON),
    the same in every process. A cache key only: a row whose digest differs is compared value by value."""
    plain = tuple(json.dumps(v, sort_keys=True, default=str) if isinstance(v, Mapping) else v for v in values)
    return hashlib.blake2b(repr(plain).encode(), digest_size=16).hexdigest()


def _identity_digest(identity: Identity) -> str:
    i = identity
    overrides = json.dumps(i.overrides, sort_keys=True, default=str) if i.overrides else "{}"
    text = repr((i.user_id, i.email, i.display_name, i.active, i.dn, overrides))  # row_digest's, written out (hot)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(slots=True)
class _RowChanges:
    inserted: list[dict[str, Any]]
    updated: list[Any]  # the rows as they were: id, external_id and the `light` columns
    removed: list[Any]
    #: every row id of the source by external id, after the changes (present or not)
    ids: dict[str, int]


def _sync_rows(
    conn: Connection,
    table: Any,
    snapshot: Snapshot,
    items: Mapping[str, T],
    digest_of: Callable[[T], str],
    values_of: Callable[[T], dict[str, Any]],
    fields: tuple[str, ...],
    light: tuple[str, ...] = (),
    gone: Collection[str] = (),
) -> _RowChanges:
    """Bring one source's rows of `table` (identities or groups) in line with a snapshot, in bulk.

    `items`: external id -> what the snapshot says, with the digest of its compared values (`digest_of`) and the
    row's values (`values_of`: the `fields` compared, and derived columns). Only the id, presence and digest of each
    stored row are read; the rows whose digest differs are then read whole and compared field by field, so that an
    unchanged pull of 100,000 people reads 100,000 short rows, decodes no JSON and holds no row object. A digest
    that differs while the values do not (a row written before the digest existed, or by another version) is only
    refreshed: no new version, no change reported. A full snapshot marks rows it lacks absent, an incremental one
    those named `gone` (what a change-based snapshot reports removed). The `light` columns
    of the rows updated or removed are read before the writes (the callers report what they were).
    """
    now = _now()
    query = select(table.c.external_id, table.c.id, table.c.present, table.c.digest).where(
        table.c.source == snapshot.source
    )
    queries = [query]
    if snapshot.incremental:  # it marks nothing absent: only the rows it sends are compared
        queries = in_chunks(query, table.c.external_id, sorted(set(items).union(gone)))
    ids: dict[str, int] = {}
    absent: set[str] = set()
    suspect: list[str] = []
    for q in queries:  # each stored digest compared as it is read: 100,000 of them are never held at once
        for external_id, row_id, present, digest in conn.execute(q):
            ids[external_id] = row_id
            if not present:
                absent.add(external_id)
            elif external_id in items and digest != digest_of(items[external_id]):
                suspect.append(external_id)
    inserts, updates, updated_ids = [], [], []
    for external_id, item in items.items():
        row_id = ids.get(external_id)
        if row_id is None:
            inserts.append(
                {
                    **values_of(item),
                    "digest": digest_of(item),
                    "source": snapshot.source,
                    "external_id": external_id,
                    "present": True,
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        elif external_id in absent:
            updates.append(
                {**values_of(item), "digest": digest_of(item), "b_id": row_id, "present": True, "updated_at": now}
            )
            updated_ids.append(row_id)
    refreshed = []
    if suspect:
        whole = select(table.c.id, *(table.c[name] for name in fields))
        stored = {}
        for q in in_chunks(whole, table.c.id, [ids[external_id] for external_id in suspect]):
            stored.update({r.id: r for r in conn.execute(q)})
        for external_id in suspect:
            row_id, item = ids[external_id], items[external_id]
            values, digest = values_of(item), digest_of(item)
            if any(getattr(stored[row_id], name) != values[name] for name in fields):
                updates.append({**values, "digest": digest, "b_id": row_id, "present": True, "updated_at": now})
                updated_ids.append(row_id)
            else:
                refreshed.append({"b_id": row_id, "b_digest": digest})
    lacking = gone if snapshot.incremental else ids
    removed_ids = [ids[e] for e in lacking if e in ids and e not in absent and e not in items]
    updated, removed = _rows_before(conn, table, light, updated_ids), _rows_before(conn, table, light, removed_ids)
    if inserts:
        conn.execute(insert(table), inserts)
    if updates:
        conn.execute(update(table).where(table.c.id == bindparam("b_id")).values(version=table.c.version + 1), updates)
    if refreshed:
        quietly = update(table).where(table.c.id == bindparam("b_id")).values(digest=bindparam("b_digest"))
        conn.execute(quietly, refreshed)
    if removed_ids:
        conn.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(present=False, updated_at=now, version=table.c.version + 1),
            [{"b_id": row_id} for row_id in removed_ids],
        )
    if inserts:  # their new ids
        new = sorted(values["external_id"] for values in inserts)
        lookup = select(table.c.external_id, table.c.id).where(table.c.source == snapshot.source)
        for q in in_chunks(lookup, table.c.external_id, new):
            ids.update((row[0], row[1]) for row in conn.execute(q))
    return _RowChanges(inserts, updated, removed, ids)


def _rows_before(conn: Connection, table: Any, light: tuple[str, ...], row_ids: list[int]) -> list[Any]:
    """The id, external id and `light` columns of these rows, as they are."""
    query = select(table.c.id, table.c.external_id, *(table.c[name] for name in light))
    return [row for q in in_chunks(query, table.c.id, row_ids) for row in conn.execute(q)]


@dataclass(slots=True)
class _PairChanges:
    """Membership changes by (group row id, identity row id): added and rerouted with their new via, removed with
    the via they had; and, of the narrow groups, each one's members digest after them."""

    added: dict[tuple[int, int], str | None] = field(default_factory=dict)
    removed: dict[tuple[int, int], str | None] = field(default_factory=dict)
    rerouted: dict[tuple[int, int], str | None] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)

    def compare(
        self, wanted: Mapping[tuple[int, int], str | None], current: Mapping[tuple[int, int], str | None]
    ) -> None:
        """Add the differences between the pairs wanted and those recorded."""
        self.added.update((pair, wanted[pair]) for pair in wanted.keys() - current.keys())
        self.removed.update((pair, current[pair]) for pair in current.keys() - wanted.keys())
        self.rerouted.update(
            (pair, wanted[pair]) for pair in wanted.keys() & current.keys() if wanted[pair] != current[pair]
        )

    def write(self, conn: Connection, source: str) -> None:
        """Apply the changes to the memberships table."""
        m = memberships.c
        added = list(self.added.items())
        for start in range(0, len(added), _INSERT_CHUNK):  # a million rows' parameters are never in memory at once
            rows = [
                {"group_id": g, "identity_id": i, "source": source, "via": via}
                for (g, i), via in added[start : start + _INSERT_CHUNK]
            ]
            conn.execute(insert(memberships), rows)
        if self.removed:
            conn.execute(
                delete(memberships).where(m.group_id == bindparam("b_group"), m.identity_id == bindparam("b_identity")),
                [{"b_group": g, "b_identity": i} for g, i in self.removed],
            )
        if self.rerouted:
            conn.execute(
                update(memberships)
                .where(m.group_id == bindparam("b_group"), m.identity_id == bindparam("b_identity"))
                .values(via=bindparam("b_via")),
                [{"b_group": g, "b_identity": i, "b_via": via} for (g, i), via in self.rerouted.items()],
            )


class SourceStore:
    """Reads and writes the per-source tables: identities, groups, memberships, source_state."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- recording -------------------------------------------------------------------------------------------
    def record_snapshot(self, snapshot: Snapshot) -> RecordResult:
        """Write a complete snapshot in one transaction; raise IncompleteSnapshot (changing nothing) otherwise."""
        if not snapshot.complete:
            raise IncompleteSnapshot(f"source {snapshot.source}: incomplete pull: " + "; ".join(snapshot.problems))
        result = RecordResult(snapshot.source)
        with self.engine.begin() as conn:
            if not snapshot.incremental and not snapshot.identities:
                present = conn.scalar(
                    select(func.count()).where(identities.c.source == snapshot.source, identities.c.present)
                )
                if present:
                    raise IncompleteSnapshot(
                        f"source {snapshot.source}: the pull returned no users where {present} were known; "
                        "treated as incomplete"
                    )
            if not snapshot.incremental and snapshot.identities and not snapshot.groups:
                known = conn.scalar(select(func.count()).where(groups.c.source == snapshot.source, groups.c.present))
                if known:
                    raise IncompleteSnapshot(
                        f"source {snapshot.source}: the pull returned no groups where {known} were known; "
                        "treated as incomplete"
                    )
            stored = self._narrow_groups(conn, snapshot)
            whole = [group.members for group in snapshot.groups if group.external_id not in stored]
            ids = self._record_identities(conn, snapshot, result, whole)
            digests = MembersDigest()
            narrow = self._narrow_changes(conn, snapshot, ids, stored, digests)
            group_ids, touched = self._record_groups(conn, snapshot, result, ids, digests, narrow.digests)
            self._record_memberships(conn, snapshot, ids, group_ids, result, touched - stored.keys(), narrow)
            self._mark_success(conn, snapshot)
            self._save_sync_index(conn, snapshot)
        return result

    def _record_identities(
        self, conn: Connection, snapshot: Snapshot, result: RecordResult, whole: list[frozenset[str]]
    ) -> dict[str, int]:
        """Record the identities; returns the row id of each identity the snapshot names (all of the source's when
        the snapshot is full). `whole`: the member sets of the groups compared whole."""
        items = {i.external_id: i for i in reversed(snapshot.identities)}
        change = _sync_rows(
            conn,
            identities,
            snapshot,
            items,
            _identity_digest,
            _identity_values,
            _IDENTITY_FIELDS,
            light=("user_id",),
            gone=snapshot.removed_identities,
        )
        result.affected_user_ids.update(values["user_id"] for values in change.inserted)
        result.affected_user_ids.update(row.user_id for row in change.updated)
        result.affected_user_ids.update(items[row.external_id].user_id for row in change.updated)
        result.affected_user_ids.update(row.user_id for row in change.removed)
        result.identities_added, result.identities_updated = len(change.inserted), len(change.updated)
        result.identities_removed = len(change.removed)
        if snapshot.incremental:  # its groups may name members it did not send: their ids too
            named = set(items).union(*whole, snapshot.member_hint or ())
            return self._ids(conn, identities, snapshot.source, named)
        return change.ids

    @staticmethod
    def _narrow_groups(conn: Connection, snapshot: Snapshot) -> dict[str, tuple[int, str]]:
        """The groups of a change-based snapshot whose members are compared only for the people of its member hint:
        those recorded present with a members digest. External id -> (row id, members digest)."""
        if not snapshot.change_based or snapshot.member_hint is None or not snapshot.groups:
            return {}
        c = groups.c
        query = select(c.external_id, c.id, c.members_digest).where(
            c.source == snapshot.source, c.present, c.members_digest.is_not(None)
        )
        wanted = sorted({group.external_id for group in snapshot.groups})
        return {row[0]: (row[1], row[2]) for q in in_chunks(query, c.external_id, wanted) for row in conn.execute(q)}

    @staticmethod
    def _narrow_changes(
        conn: Connection,
        snapshot: Snapshot,
        identity_ids: Mapping[str, int],
        stored: Mapping[str, tuple[int, str]],
        digests: MembersDigest,
    ) -> _PairChanges:
        """The membership changes of the narrow groups (`stored`), from the pairs of the member hint's people only,
        and each narrow group's members digest updated by those changes (not recomputed from its whole list)."""
        changes = _PairChanges()
        if not stored:
            return changes
        hint = snapshot.member_hint or set()
        people = {identity_ids[member]: member for member in hint if member in identity_ids}
        by_row = {row_id: external_id for external_id, (row_id, _) in stored.items()}
        query = select(memberships.c.group_id, memberships.c.identity_id, memberships.c.via)
        current = {
            (row[0], row[1]): row[2]
            for q in in_chunks(query, memberships.c.identity_id, sorted(people))
            for row in conn.execute(q)
            if row[0] in by_row
        }
        wanted: dict[tuple[int, int], str | None] = {}
        for group in snapshot.groups:
            if group.external_id in stored:
                group_id = stored[group.external_id][0]
                for member in group.members & hint:
                    if member in identity_ids:
                        wanted[(group_id, identity_ids[member])] = group.via.get(member)
        changes.compare(wanted, current)
        plus: defaultdict[int, list[tuple[str, str | None]]] = defaultdict(list)
        minus: defaultdict[int, list[tuple[str, str | None]]] = defaultdict(list)
        for (group_id, identity_id), via in changes.added.items():
            plus[group_id].append((people[identity_id], via))
        for (group_id, identity_id), via in changes.removed.items():
            minus[group_id].append((people[identity_id], via))
        for pair, via in changes.rerouted.items():
            plus[pair[0]].append((people[pair[1]], via))
            minus[pair[0]].append((people[pair[1]], current[pair]))
        for external_id, (row_id, digest) in stored.items():
            changed = row_id in plus or row_id in minus
            changes.digests[external_id] = digests.updated(digest, plus[row_id], minus[row_id]) if changed else digest
        return changes

    def _record_groups(
        self,
        conn: Connection,
        snapshot: Snapshot,
        result: RecordResult,
        identity_ids: Mapping[str, int],
        digests: MembersDigest,
        narrow: Mapping[str, str],
    ) -> tuple[dict[str, int], set[str]]:
        """Record the groups (the `narrow` ones with the members digest given); returns every group id of the source
        and the groups added, updated or removed."""
        items: dict[str, tuple[str, dict[str, Any]]] = {}
        for g in reversed(snapshot.groups):
            digest = narrow.get(g.external_id)
            if digest is None:
                digest = digests.whole(g.members & identity_ids.keys(), g.via)
            values = _group_values(g, digest)
            items[g.external_id] = (row_digest(values[name] for name in _GROUP_FIELDS), values)
        change = _sync_rows(
            conn,
            groups,
            snapshot,
            items,
            itemgetter(0),
            lambda item: dict(item[1]),
            _GROUP_FIELDS,
            gone=snapshot.removed_groups,
        )
        result.groups_added, result.groups_updated = len(change.inserted), len(change.updated)
        result.groups_removed = len(change.removed)
        inserted = {values["external_id"] for values in change.inserted}
        touched = inserted | {row.external_id for row in (*change.updated, *change.removed)}
        if snapshot.incremental:
            return self._ids(conn, groups, snapshot.source), touched
        return change.ids, touched

    def _record_memberships(
        self,
        conn: Connection,
        snapshot: Snapshot,
        identity_ids: Mapping[str, int],
        group_ids: Mapping[str, int],
        result: RecordResult,
        whole: set[str],
        narrow: _PairChanges,
    ) -> None:
        """Bring the memberships in line: of the `whole` groups (added, removed, or whose members digest changed)
        compared member by member, and the changes `narrow` found for the others.

        A change-based snapshot's `member_hint` names every person whose memberships may have changed: in the groups
        that existed before and still do, only their pairs were compared (a 50,000-member group that lost one member
        costs one pair, not 50,000); new and removed groups are compared whole.
        """
        wanted: dict[tuple[int, int], str | None] = {}
        for group in snapshot.groups:
            if group.external_id not in whole:
                continue
            group_id = group_ids[group.external_id]
            for member in group.members:
                if member in identity_ids:
                    wanted[(group_id, identity_ids[member])] = group.via.get(member)
        query = select(memberships.c.group_id, memberships.c.identity_id, memberships.c.via)
        current = {
            (row[0], row[1]): row[2]
            for q in in_chunks(query, memberships.c.group_id, sorted(group_ids[g] for g in whole))
            for row in conn.execute(q)
        }
        changes = _PairChanges()
        changes.compare(wanted, current)
        changes.added.update(narrow.added)
        changes.removed.update(narrow.removed)
        changes.rerouted.update(narrow.rerouted)
        changes.write(conn, snapshot.source)
        result.memberships_added, result.memberships_removed = len(changes.added), len(changes.removed)
        changed_ids = {i for _, i in (*changes.added, *changes.removed)}
        if changed_ids:
            result.affected_user_ids.update(self._user_ids(conn, changed_ids))

    @staticmethod
    def _ids(conn: Connection, table: Any, source: str, only: Collection[str] | None = None) -> dict[str, int]:
        """external id -> row id of the source's rows (of those in `only`: looked up when they are few)."""
        query = select(table.c.external_id, table.c.id).where(table.c.source == source)
        if only is None or len(only) > 20_000:  # one scan beats thousands of lookups
            return {row[0]: row[1] for row in conn.execute(query)}
        return {row[0]: row[1] for q in in_chunks(query, table.c.external_id, sorted(only)) for row in conn.execute(q)}

    @staticmethod
    def _user_ids(conn: Connection, ids: Iterable[int]) -> set[str]:
        query = select(identities.c.user_id)
        return {user_id for q in in_chunks(query, identities.c.id, list(ids)) for user_id in conn.scalars(q)}

    def _mark_success(self, conn: Connection, snapshot: Snapshot) -> None:
        now = _now()
        values: dict[str, Any] = {
            "last_success_at": now,
            "last_attempt_at": now,
            "last_error": None,
            "counters": dict(snapshot.counters),
        }
        if snapshot.high_water_mark is not None:
            values["high_water_mark"] = snapshot.high_water_mark
        if not snapshot.incremental or snapshot.change_based:  # a change-based pull is a full one, cheaply
            values["last_full_at"] = now
        if snapshot.sync_cookie is not None or not snapshot.incremental:
            values["sync_cookie"] = snapshot.sync_cookie  # a full pull without cookies ends the content sync
        self._upsert_state(conn, snapshot.source, values)

    def mark_success(self, source: str) -> None:
        """Remember a successful pass of something that records no snapshot (the LiteLLM drift check)."""
        with self.engine.begin() as conn:
            self._mark_success(conn, Snapshot(source, incremental=True))

    @staticmethod
    def _save_sync_index(conn: Connection, snapshot: Snapshot) -> None:
        """Store what the snapshot's cookies go with: a base replaces the source's rows, a delta follows them. A
        snapshot with cookies but no index (or a delta with no base before it) leaves none: nothing to continue."""
        if snapshot.sync_cookie is None and snapshot.incremental:
            return  # an incremental pull by timestamp: the content sync state, if any, stands
        rows = source_index.c
        last = conn.scalar(select(func.max(rows.seq)).where(rows.source == snapshot.source))
        if snapshot.sync_index is not None and not snapshot.sync_index_base and last is not None:
            conn.execute(insert(source_index).values(source=snapshot.source, seq=last + 1, body=snapshot.sync_index))
            return
        if last is not None:
            conn.execute(delete(source_index).where(rows.source == snapshot.source))
        if snapshot.sync_index is not None and snapshot.sync_index_base:
            conn.execute(insert(source_index).values(source=snapshot.source, seq=0, body=snapshot.sync_index))

    def sync_index(self, source: str) -> list[bytes]:
        """The stored index of a source's content sync: the base, then each delta, in order (empty: none)."""
        rows = source_index.c
        with self.engine.connect() as conn:
            query = select(rows.body).where(rows.source == source).order_by(rows.seq)
            return [bytes(body) for body in conn.scalars(query)]

    # -- source state ----------------------------------------------------------------------------------------
    def record_failure(self, source: str, error: str) -> None:
        """Remember that a pull of `source` failed (its recorded state stays as it was)."""
        with self.engine.begin() as conn:
            self._upsert_state(conn, source, {"last_attempt_at": _now(), "last_error": error[:2000]})

    @staticmethod
    def _upsert_state(conn: Connection, source: str, values: dict[str, Any]) -> None:
        updated = conn.execute(update(source_state).where(source_state.c.source == source).values(**values))
        if updated.rowcount == 0:
            conn.execute(insert(source_state).values(source=source, **{"counters": {}, **values}))

    def source_state(self, source: str) -> SourceState:
        """The stored state of one source (an empty state when it never ran)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(source_state).where(source_state.c.source == source)).mappings().first()
        if row is None:
            return SourceState(source)
        return SourceState(**{key: row[key] for key in SourceState.__slots__})

    def source_states(self) -> list[SourceState]:
        """Every source's stored state."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(source_state).order_by(source_state.c.source)).mappings().all()
        return [SourceState(**{key: row[key] for key in SourceState.__slots__}) for row in rows]

    # -- reading ---------------------------------------------------------------------------------------------
    def memberships_of(self, source: str, external_id: str) -> dict[str, str | None]:
        """One identity's groups in its source: group external id -> the child group it came through (None: direct)."""
        query = (
            select(groups.c.external_id, memberships.c.via)
            .select_from(memberships.join(groups).join(identities))
            .where(identities.c.source == source, identities.c.external_id == external_id)
        )
        with self.engine.connect() as conn:
            return {row[0]: row[1] for row in conn.execute(query)}

    def dump_source(self, source: str) -> dict[str, Any]:
        """A comparable view of what the store holds for one source (for tests and `syncd explain`)."""
        with self.engine.connect() as conn:
            people = {
                row.external_id: {name: getattr(row, name) for name in ("present", *_IDENTITY_FIELDS)}
                for row in conn.execute(select(identities).where(identities.c.source == source))
            }
            teams = {
                row.external_id: {name: getattr(row, name) for name in ("present", *_GROUP_FIELDS)}
                for row in conn.execute(select(groups).where(groups.c.source == source))
            }
            rows = conn.execute(
                select(groups.c.external_id, identities.c.external_id, memberships.c.via)
                .select_from(memberships.join(groups).join(identities))
                .where(memberships.c.source == source)
            )
            members: dict[str, dict[str, str | None]] = {}
            for group_ext, identity_ext, via in rows:
                members.setdefault(group_ext, {})[identity_ext] = via
        return {"identities": people, "groups": teams, "memberships": members}

    def recorded_ids(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The row id (the order in which the store first recorded it) of each identity named (source, external_id)."""
        wanted = set(keys)
        c = identities.c
        query = select(c.source, c.external_id, c.id)
        with self.engine.connect() as conn:
            rows = [
                row for q in in_chunks(query, c.external_id, sorted({k[1] for k in wanted})) for row in conn.execute(q)
            ]
        return {(row[0], row[1]): row[2] for row in rows if (row[0], row[1]) in wanted}

    def load_people(
        self, user_ids: Collection[str] | None = None, *, exclude_sources: Collection[str] = ()
    ) -> tuple[list[Identity], list[Group]]:
        """Present identities and groups with their present members (the input of the mapping).

        With `user_ids`, only those people (every identity sharing their email too) and the groups they are in,
        each group listing only them: what a targeted reconcile after a SCIM write needs.
        """
        wanted: Any = identities.c.present
        if exclude_sources:  # the caller holds those sources' fresh snapshots
            wanted = wanted & identities.c.source.not_in(list(exclude_sources))
        if user_ids is not None:
            ids = list(user_ids)
            emails = select(identities.c.email_lower).where(
                identities.c.user_id.in_(ids), identities.c.email_lower != ""
            )
            wanted = wanted & (identities.c.user_id.in_(ids) | identities.c.email_lower.in_(emails))
        c = identities.c
        columns = (c.id, c.source, c.external_id, c.user_id, c.email, c.display_name, c.active, c.dn)
        no_overrides: Mapping[str, Any] = MappingProxyType({})
        with self.engine.connect() as conn:
            rows = conn.execute(select(*columns, cast(c.overrides, Text)).where(wanted)).all()
            people = [
                Identity(
                    row[1], row[2], row[3], row[4], row[5], row[6], row[7], _overrides(row[8]) or no_overrides, row[0]
                )
                for row in rows
            ]
            # memberships as pairs of ids (no join: a quarter of the time at 750,000), named by the people loaded
            external = {row[0]: row[2] for row in rows}
            del rows
            pairs = select(memberships.c.group_id, memberships.c.identity_id)
            if user_ids is None:
                if exclude_sources:
                    pairs = pairs.where(memberships.c.source.not_in(list(exclude_sources)))
            else:
                pairs = pairs.where(memberships.c.identity_id.in_(list(external)))
            members: defaultdict[int, set[str]] = defaultdict(set)
            for part in conn.execute(pairs).partitions(20_000):
                for group_id, identity_id in part:
                    name = external.get(identity_id)
                    if name is not None:  # a present identity
                        members[group_id].add(name)
            group_query = select(groups).where(groups.c.present)
            if exclude_sources:
                group_query = group_query.where(groups.c.source.not_in(list(exclude_sources)))
            if user_ids is not None:
                group_query = group_query.where(groups.c.id.in_(list(members)))
            teams = [
                Group(
                    source=row.source,
                    external_id=row.external_id,
                    name=row.name,
                    dn=row.dn,
                    members=frozenset(members.get(row.id, ())),
                    grant=row.grant or {},
                )
                for row in conn.execute(group_query)
            ]
        return people, teams
