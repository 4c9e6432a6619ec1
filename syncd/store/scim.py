"""What the SCIM service provider stores and queries: users in identities, groups, memberships, indexed values.

A filter arrives as a `Criterion` (syncd.store.scim_filter, re-exported here) and becomes one SQL condition with
bound parameters. Reads are single statements run in autocommit (a page, its total and each user's groups at once);
a POST is one statement on PostgreSQL, a PATCH/PUT of a user one statement applied at the version read (optimistic),
and group writes run in a transaction holding the group's row (`SELECT ... FOR UPDATE`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Engine,
    Float,
    Integer,
    RowMapping,
    String,
    and_,
    bindparam,
    column,
    delete,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from syncd.store.scim_filter import (
    And,
    Compare,
    Const,
    Criterion,
    Item,
    Not,
    Or,
    Present,
    Sort,
    UnsupportedPath,
    criterion_sql,
    order_by,
    sort_key,
)
from syncd.store.tables import groups, identities, memberships, scim_pending_members, scim_user_values

_I, _G, _V = identities.c, groups.c, scim_user_values.c

__all__ = [
    "And",
    "Compare",
    "Const",
    "Criterion",
    "DuplicateUserName",
    "GroupRecord",
    "GroupWrite",
    "IndexedValue",
    "Item",
    "Member",
    "Not",
    "Or",
    "Present",
    "ScimSession",
    "ScimStore",
    "Sort",
    "StoreUnavailable",
    "UnsupportedPath",
    "UserRecord",
    "UserWrite",
    "criterion_sql",
    "name_key",
]


def name_key(text: str) -> str:
    """The form a userName is compared and kept unique in: NFC, case-folded (an NFD `José` is the NFC `José`)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


class StoreUnavailable(Exception):
    """The database cannot be reached (or is locked) right now: the request may be sent again."""


class DuplicateUserName(Exception):
    """Another present user of the same source has this userName."""


# --- records -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexedValue:
    """One value of a user's attribute, as `scim_user_values` keeps it for filters and sorting."""

    path: str
    item: int
    key: str | None
    number: float | None = None


@dataclass(frozen=True, slots=True)
class UserWrite:
    """Everything one user write stores."""

    user_name: str
    scim_external_id: str | None
    user_id: str
    email: str
    display_name: str | None
    active: bool
    resource: Mapping[str, Any]
    #: the indexed values of the resource; for a rewrite, those of the attributes it changes (`before` likewise)
    values: tuple[IndexedValue, ...] = ()


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A stored SCIM user."""

    pk: int
    id: str
    user_name: str
    user_id: str
    active: bool
    display_name: str | None
    resource: Mapping[str, Any]
    version: int
    created: datetime
    updated: datetime
    groups: tuple[tuple[str, str], ...] = ()  # (group id, displayName)


@dataclass(frozen=True, slots=True)
class Member:
    """A user in a group."""

    pk: int
    id: str
    user_id: str
    display: str | None


@dataclass(frozen=True, slots=True)
class GroupWrite:
    """Everything one group write stores (members apart)."""

    display_name: str
    scim_external_id: str | None
    resource: Mapping[str, Any]
    #: what the group's members get in LiteLLM (syncd's Group extension), validated
    grant: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """A stored SCIM group."""

    pk: int
    id: str
    display_name: str
    resource: Mapping[str, Any]
    version: int
    created: datetime
    updated: datetime
    members: tuple[Member, ...] = field(default_factory=tuple)
    #: members named before their user exists: (value, display); read only for a write (`group(pending=True)`)
    pending: tuple[tuple[str, str | None], ...] = ()


def _dialect_insert(dialect: str, table: Any) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def _index_changes(
    before: Sequence[IndexedValue], after: Sequence[IndexedValue]
) -> tuple[list[str], list[IndexedValue]]:
    """(the paths whose rows must go, the rows to add): only the top-level attributes that changed."""
    old, new = _by_attribute(before), _by_attribute(after)
    changed = sorted(top for top in old.keys() | new.keys() if old.get(top) != new.get(top))
    stale = sorted({v.path for top in changed for v in old.get(top, [])})
    return stale, [v for top in changed for v in new.get(top, [])]


def _value_rows(values: Sequence[IndexedValue]) -> dict[str, list[dict[str, Any]]]:
    return {"values": [{"path": v.path, "item": v.item, "key": v.key, "number": v.number} for v in values]}


def _unnested_values() -> Any:
    """The indexed values of a write, passed as one JSON array of rows (one statement shape whatever their number;
    cheaper to send than four typed arrays)."""
    rows = bindparam("values", type_=JSON)
    columns = column("path", String(300)), column("item", Integer), column("key", String(600)), column("number", Float)
    return func.json_to_recordset(rows).table_valued(*columns).render_derived(name="v", with_types=True)


def _index_cte(owner: Any, name: str) -> Any:
    values = _unnested_values()
    rows = select(owner.c.id, values.c.path, values.c.item, values.c.key, values.c.number).select_from(
        owner.join(values, true())
    )
    columns = ["identity_id", "path", "item", "key", "number"]
    return insert(scim_user_values).from_select(columns, rows).cte(name)


_WRITTEN_COLUMNS = (
    "user_id",
    "email",
    "email_lower",
    "display_name",
    "active",
    "user_name",
    "user_name_lower",
    "scim_external_id",
    "resource",
    "updated_at",
    "digest",  # always None: a pull's digest of the row (store/sources.py) no longer describes it
)


@cache
def _pg_insert_user() -> Any:
    """POST on PostgreSQL in one statement: the user (unless its userName is taken) and its indexed values."""
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert

    names = ("source", "external_id", "present", "dn", "overrides", "version", "created_at", *_WRITTEN_COLUMNS)
    new_user = (
        postgresql_insert(identities)
        .values({name: bindparam(name, type_=identities.c[name].type) for name in names})
        .on_conflict_do_nothing(index_elements=[_I.source, _I.user_name_lower], index_where=_I.present)
        .returning(_I.id)
        .cte("new_user")
    )
    return select(new_user.c.id).add_cte(_index_cte(new_user, "indexed"))


@cache
def _pg_update_user() -> Any:
    """PATCH/PUT on PostgreSQL in one statement, applied only at the version read: fields, stale and new values.

    It answers the user's present groups as well (as `_groups_of_user`), so that the response needs no other read.
    The stale paths come as a JSON array, as the new values do (`_unnested_values`).
    """
    written = {name: bindparam(name, type_=identities.c[name].type) for name in _WRITTEN_COLUMNS}
    changed = (
        update(identities)
        .where(_I.id == bindparam("pk"), _I.version == bindparam("expected"))
        .values(**written, version=_I.version + 1)
        .returning(_I.id)
        .cte("changed")
    )
    dropped = (
        delete(scim_user_values)
        .where(
            _V.identity_id.in_(select(changed.c.id)),
            _V.path.in_(select(func.json_array_elements_text(bindparam("stale", type_=JSON)))),
        )
        .cte("dropped")
    )
    return select(changed.c.id, _groups_of(changed.c.id)).add_cte(dropped).add_cte(_index_cte(changed, "indexed"))


def _by_attribute(values: Sequence[IndexedValue]) -> dict[str, list[IndexedValue]]:
    """Indexed values by top-level attribute (the path before the first dot)."""
    grouped: dict[str, list[IndexedValue]] = {}
    for value in values:
        grouped.setdefault(value.path.split(".", 1)[0], []).append(value)
    return grouped


# --- users with their groups in one statement -------------------------------------------------------------------

_GROUP_SEPARATOR, _FIELD_SEPARATOR = "\x1e", "\x1f"
_USER_FIELDS = (
    _I.id,
    _I.external_id,
    _I.user_name,
    _I.user_id,
    _I.active,
    _I.display_name,
    _I.resource,
    _I.version,
    _I.created_at,
    _I.updated_at,
)


def _groups_of_user() -> Any:
    """A user's present groups as one string (id and name of each), so that a page of users is one flat query."""
    return _groups_of(_I.id)


def _groups_of(identity_id: Any) -> Any:
    """The present groups of the identity `identity_id` (a column) as one string; `_parse_groups` reads it."""
    pair = _G.external_id + _FIELD_SEPARATOR + _G.name
    return (
        select(func.aggregate_strings(pair, _GROUP_SEPARATOR))
        .select_from(memberships.join(groups, _G.id == memberships.c.group_id))
        .where(memberships.c.identity_id == identity_id, _G.present == true())
        .scalar_subquery()
        .label("_groups")
    )


def _parse_groups(aggregated: str | None) -> tuple[tuple[str, str], ...]:
    """(group id, displayName) of each group in `_groups_of`'s string, ordered."""
    found = [tuple(pair.split(_FIELD_SEPARATOR, 1)) for pair in (aggregated or "").split(_GROUP_SEPARATOR) if pair]
    return tuple(sorted((str(i), n) for i, n in found))


@cache
def _user_by_id(lock: bool) -> Any:
    query = select(*_USER_FIELDS, _groups_of_user()).where(
        _I.source == bindparam("source"), _I.external_id == bindparam("id"), _I.present == true()
    )
    return query.with_for_update(of=identities) if lock else query


@cache
def _user_page(*, by_user_name: bool) -> Any:
    """The hot statements, built once: a page of all users, and the userName lookup Okta and Entra repeat."""
    where = [_I.source == bindparam("source"), _I.present == true()]
    if by_user_name:
        where.append(_I.user_name_lower == bindparam("user_name"))
    return _paged_users(and_(*where), None)


def _paged_users(where: ColumnElement[bool], sort: Sort | None) -> Any:
    """A page of users and the total, in one statement that reads in full only the rows of the page.

    The page is chosen on ids (and the sort key) alone; the total is an uncorrelated count, computed once.
    """
    key = sort_key(sort, "user")
    inner = [_I.id] if key is None else [_I.id, key.label("_key")]
    page = (
        select(*inner)
        .where(where)
        .order_by(*order_by(sort, "user"))
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
        .subquery("page")
    )
    total = select(func.count()).select_from(identities).where(where).scalar_subquery().label("_total")
    order: list[ColumnElement[Any]] = [page.c.id]
    if key is not None and sort is not None:
        ordered = page.c._key.desc() if sort.descending else page.c._key.asc()
        order = [ordered.nulls_last(), page.c.id]
    return (
        select(*_USER_FIELDS, _groups_of_user(), total).join_from(identities, page, page.c.id == _I.id).order_by(*order)
    )


def _is_user_name_lookup(criterion: Criterion) -> bool:
    return (
        isinstance(criterion, Compare)
        and criterion.path == "username"
        and criterion.op == "eq"
        and isinstance(criterion.value, str)
    )


def _user_records(rows: Sequence[RowMapping]) -> list[UserRecord]:
    return [_user_record(row, _parse_groups(row["_groups"])) for row in rows]


# --- the store ---------------------------------------------------------------------------------------------------


class ScimStore:
    """Opens SCIM sessions on the store's engine: one transaction each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        #: user writes are single statements applied at the version read (`ScimSession.update_user_at`)
        self.optimistic = self.dialect == "postgresql"

    @contextmanager
    def session(self, *, write: bool = False, atomic: bool = False) -> Iterator[ScimSession]:
        """One transaction; a write session on SQLite takes the write lock at once (BEGIN IMMEDIATE).

        A read session runs its (single-statement) queries in autocommit: no BEGIN and ROLLBACK round trips. So
        does an `atomic` write session on PostgreSQL, whose user writes are each one statement that checks the
        version read before (optimistic: `update_user_at` answers None when another write came first).
        """
        atomic = atomic and self.optimistic
        try:
            with self.engine.connect() as connection:
                if not write or atomic:
                    connection = connection.execution_options(isolation_level="AUTOCOMMIT")
                elif self.dialect == "sqlite":
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                with connection.begin() if not connection.in_transaction() else _noop():
                    yield ScimSession(connection, self.dialect, atomic=atomic)
                if connection.in_transaction():
                    connection.commit()
        except (OperationalError, InterfaceError) as exc:
            # the database is down, unreachable or busy: a retryable condition, not a bug
            raise StoreUnavailable(type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__) from exc


@contextmanager
def _noop() -> Iterator[None]:
    yield


class ScimSession:
    """The queries of one SCIM request, inside its transaction."""

    def __init__(self, connection: Connection, dialect: str, *, atomic: bool = False) -> None:
        self.connection = connection
        self.dialect = dialect
        self.atomic = atomic

    # users

    def user(self, source: str, id: str, *, lock: bool = False) -> UserRecord | None:
        """The present user `id` of `source`, its groups included; `lock` holds its row until the end."""
        query = _user_by_id(lock and self.dialect == "postgresql" and not self.atomic)
        rows = self.connection.execute(query, {"source": source, "id": id}).mappings().all()
        return _user_records(rows)[0] if rows else None

    def users(
        self, source: str, criterion: Criterion, sort: Sort | None, start: int, count: int
    ) -> tuple[int, list[UserRecord]]:
        """(how many present users of `source` match, the `count` of them from the 1-based `start`).

        One statement: the page, its total (a window count) and each user's groups (an aggregated subquery).
        """
        where = and_(_I.source == source, _I.present == true(), criterion_sql(criterion, "user", self.dialect))
        if count <= 0:
            return self._count(identities, where), []
        params: dict[str, Any] = {"source": source, "offset": start - 1, "limit": count}
        if sort is None and isinstance(criterion, Const) and criterion.value:
            query = _user_page(by_user_name=False)
        elif sort is None and _is_user_name_lookup(criterion):
            query, params["user_name"] = _user_page(by_user_name=True), getattr(criterion, "value", None)
        else:
            query = _paged_users(where, sort)
        rows = self.connection.execute(query, params).mappings().all()
        if not rows:
            return (self._count(identities, where) if start > 1 else 0), []
        return int(rows[0]["_total"]), _user_records(rows)

    def _count(self, table: Any, where: ColumnElement[bool]) -> int:
        return int(self.connection.execute(select(func.count()).select_from(table).where(where)).scalar_one())

    def insert_user(self, source: str, id: str, write: UserWrite, now: datetime) -> int:
        """Store a new user; raises DuplicateUserName (the partial unique index, without a savepoint)."""
        values = {**_user_columns(write), "source": source, "external_id": id, "present": True, "dn": None}
        values.update(overrides={}, version=1, created_at=now, updated_at=now)
        if self.dialect == "postgresql":
            pk = self.connection.execute(_pg_insert_user(), {**values, **_value_rows(write.values)}).scalar()
            if pk is None:
                raise DuplicateUserName(write.user_name)
            return int(pk)
        statement = _dialect_insert(self.dialect, identities).values(**values)
        statement = statement.on_conflict_do_nothing(
            index_elements=[_I.source, _I.user_name_lower], index_where=_I.present
        ).returning(_I.id)
        pk = self.connection.execute(statement).scalar()
        if pk is None:
            raise DuplicateUserName(write.user_name)
        self._index(pk, write.values)
        return int(pk)

    def update_user(
        self,
        pk: int,
        write: UserWrite,
        now: datetime,
        *,
        renamed: bool = True,
        before: Sequence[IndexedValue] | None = None,
    ) -> None:
        """Replace a user's stored fields and indexed values, and bump its version; raises DuplicateUserName.

        `renamed`: the userName may now clash (checked under a savepoint); `before`: the indexed values stored so
        far (of the same attributes as `write.values`), so that only the attributes that changed are re-indexed;
        None: all are, from `write.values` (which must then hold every value). The user's row must be held
        (`user(lock=True)` in this session); in an atomic session, use `update_user_at`.
        """
        statement = (
            update(identities).where(_I.id == pk).values(**_user_columns(write), updated_at=now, version=_I.version + 1)
        )
        if renamed:
            try:
                with self.connection.begin_nested():
                    self.connection.execute(statement)
            except IntegrityError:
                raise DuplicateUserName(write.user_name) from None
        else:
            self.connection.execute(statement)
        self._reindex(pk, before, write.values)

    def update_user_at(
        self, pk: int, write: UserWrite, now: datetime, *, before: Sequence[IndexedValue], version: int
    ) -> tuple[tuple[str, str], ...] | None:
        """`update_user` in an atomic session (PostgreSQL): one statement, applied only if the user is still at
        `version` (`before`: its indexed values at that version, of the same attributes as `write.values`).

        The user's groups after the write, as `UserRecord.groups`; None when another write came first (nothing
        written). Raises DuplicateUserName.
        """
        stale, fresh = _index_changes(before, write.values)
        params = {**_user_columns(write), "updated_at": now, "pk": pk, "expected": version, "stale": stale}
        try:
            row = self.connection.execute(_pg_update_user(), {**params, **_value_rows(fresh)}).first()
        except IntegrityError:
            raise DuplicateUserName(write.user_name) from None
        return None if row is None else _parse_groups(row[1])

    def _reindex(self, pk: int, before: Sequence[IndexedValue] | None, after: Sequence[IndexedValue]) -> None:
        if before is None:
            self.connection.execute(scim_user_values.delete().where(_V.identity_id == pk))
            self._index(pk, after)
            return
        stale, fresh = _index_changes(before, after)
        if stale:
            self.connection.execute(scim_user_values.delete().where(_V.identity_id == pk, _V.path.in_(stale)))
        self._index(pk, fresh)

    def _index(self, pk: int, values: Iterable[IndexedValue]) -> None:
        rows = [{"identity_id": pk, "path": v.path, "item": v.item, "key": v.key, "number": v.number} for v in values]
        if rows:
            self.connection.execute(insert(scim_user_values), rows)

    def delete_user(self, pk: int, now: datetime) -> None:
        """Mark a user gone (present and active false), out of every group; the row keeps its history."""
        self.connection.execute(
            update(identities)
            .where(_I.id == pk)
            .values(present=False, active=False, updated_at=now, version=_I.version + 1)
        )
        self.connection.execute(memberships.delete().where(memberships.c.identity_id == pk))
        self.connection.execute(scim_user_values.delete().where(_V.identity_id == pk))

    # groups

    def group(self, source: str, id: str, *, lock: bool = False, members: bool = True) -> GroupRecord | None:
        """The present group `id` of `source`; `lock` holds its row (and so its members) until the end, and reads
        its pending members too."""
        query = select(groups).where(_G.source == source, _G.external_id == id, _G.present.is_(True))
        if lock and self.dialect == "postgresql":
            query = query.with_for_update()
        row = self.connection.execute(query).mappings().first()
        if row is None:
            return None
        record = self._groups_with_members([row], members)[0]
        if not lock:
            return record
        pending = select(scim_pending_members.c.value, scim_pending_members.c.display).where(
            scim_pending_members.c.group_id == record.pk
        )
        found = tuple((value, display) for value, display in self.connection.execute(pending.order_by("value")))
        return replace(record, pending=found)

    def groups(
        self, source: str, criterion: Criterion, sort: Sort | None, start: int, count: int, *, members: bool = True
    ) -> tuple[int, list[GroupRecord]]:
        """(how many present groups of `source` match, the `count` of them from the 1-based `start`)."""
        where = and_(_G.source == source, _G.present.is_(True), criterion_sql(criterion, "group", self.dialect))
        total = self.connection.execute(select(func.count()).select_from(groups).where(where)).scalar_one()
        if count <= 0 or total < start:
            return total, []
        query = select(groups).where(where).order_by(*order_by(sort, "group")).offset(start - 1).limit(count)
        rows = self.connection.execute(query).mappings().all()
        return total, self._groups_with_members(rows, members)

    def _groups_with_members(self, rows: Sequence[RowMapping], members: bool) -> list[GroupRecord]:
        by_group: dict[int, list[Member]] = {row["id"]: [] for row in rows}
        if members and by_group:
            query = (
                select(
                    memberships.c.group_id,
                    _I.id,
                    _I.external_id,
                    _I.user_id,
                    func.coalesce(memberships.c.display, _I.display_name),
                )
                .select_from(memberships.join(identities, memberships.c.identity_id == _I.id))
                .where(memberships.c.group_id.in_(list(by_group)), _I.present.is_(True))
                .order_by(_I.id)
            )
            for group_pk, pk, id, user_id, display in self.connection.execute(query):
                by_group[group_pk].append(Member(pk, id, user_id, display))
        return [_group_record(row, tuple(by_group[row["id"]])) for row in rows]

    def insert_group(self, source: str, id: str, write: GroupWrite, now: datetime) -> int:
        """Store a new group."""
        values = {**_group_columns(write), "source": source, "external_id": id, "present": True}
        values.update({"version": 1, "created_at": now, "updated_at": now, "dn": None, "dn_lower": None})
        return int(self.connection.execute(insert(groups).values(**values).returning(_G.id)).scalar_one())

    def update_group(self, pk: int, write: GroupWrite, now: datetime) -> None:
        """Replace a group's stored fields and bump its version."""
        values = {**_group_columns(write), "updated_at": now, "version": _G.version + 1}
        self.connection.execute(update(groups).where(_G.id == pk).values(**values))

    def delete_group(self, pk: int, now: datetime) -> None:
        """Mark a group gone and empty it; the row keeps its history."""
        self.connection.execute(
            update(groups).where(_G.id == pk).values(present=False, updated_at=now, version=_G.version + 1)
        )
        self.connection.execute(memberships.delete().where(memberships.c.group_id == pk))
        self.connection.execute(scim_pending_members.delete().where(scim_pending_members.c.group_id == pk))

    def change_pending(
        self, group_pk: int, source: str, *, add: Mapping[str, str | None] = {}, remove: Iterable[str] = ()
    ) -> None:
        """Record (or forget) members of a group whose row this session holds that are no users yet."""
        gone = list(remove)
        for chunk in (gone[i : i + 900] for i in range(0, len(gone), 900)):
            self.connection.execute(
                scim_pending_members.delete().where(
                    scim_pending_members.c.group_id == group_pk, scim_pending_members.c.value.in_(chunk)
                )
            )
        rows = [
            {"group_id": group_pk, "value": v, "source": source, "value_key": name_key(v), "display": d}
            for v, d in add.items()
        ]
        if rows:
            self.connection.execute(insert(scim_pending_members), rows)

    def claim_pending(self, source: str, user: Member, keys: Iterable[str], user_name: str) -> list[int]:
        """Make the arriving user a member of every group that named it while pending (by its id or externalId, or
        by its userName compared as `name_key`); the groups' pks (their versions bumped)."""
        pending = scim_pending_members.c
        named = (
            (pending.value.in_([key for key in keys if key]) | (pending.value_key == name_key(user_name)))
            if (user_name)
            else pending.value.in_([key for key in keys if key])
        )
        query = (
            select(pending.group_id, pending.value, pending.display)
            .join(groups, _G.id == pending.group_id)
            .where(pending.source == source, named, _G.present.is_(True))
        )
        found = self.connection.execute(query).all()
        if not found:
            return []
        held = set(
            self.connection.execute(
                select(memberships.c.group_id).where(
                    memberships.c.identity_id == user.pk, memberships.c.group_id.in_([g for g, _, _ in found])
                )
            ).scalars()
        )
        joined: dict[int, str | None] = {}
        for group_pk, _value, display in found:
            joined.setdefault(group_pk, display)
        rows = [
            {"group_id": g, "identity_id": user.pk, "source": source, "via": None, "display": d}
            for g, d in joined.items()
            if g not in held
        ]
        if rows:
            self.connection.execute(insert(memberships), rows)
        for group_pk, value, _display in found:
            self.connection.execute(
                scim_pending_members.delete().where(pending.group_id == group_pk, pending.value == value)
            )
        self.connection.execute(update(groups).where(_G.id.in_(list(joined))).values(version=_G.version + 1))
        return sorted(joined)

    def members_by_id(self, source: str, ids: Iterable[str]) -> dict[str, Member]:
        """The present users of `source` among `ids`, by id."""
        wanted = sorted(set(ids))
        found: dict[str, Member] = {}
        for chunk in (wanted[i : i + 500] for i in range(0, len(wanted), 500)):
            query = select(_I.id, _I.external_id, _I.user_id, _I.display_name).where(
                _I.source == source, _I.present.is_(True), _I.external_id.in_(chunk)
            )
            for pk, id, user_id, display in self.connection.execute(query):
                found[id] = Member(pk, id, user_id, display)
        return found

    def change_members(
        self,
        group_pk: int,
        source: str,
        *,
        add: Iterable[Member] = (),
        remove: Iterable[Member] = (),
        relabel: Iterable[Member] = (),
    ) -> None:
        """Add, remove and relabel (display) members of a group whose row this session holds."""
        removed = [member.pk for member in remove]
        if removed:
            self.connection.execute(
                memberships.delete().where(memberships.c.group_id == group_pk, memberships.c.identity_id.in_(removed))
            )
        rows = [
            {"group_id": group_pk, "identity_id": m.pk, "source": source, "via": None, "display": m.display}
            for m in add
        ]
        if rows:
            self.connection.execute(insert(memberships), rows)
        for member in relabel:
            self.connection.execute(
                update(memberships)
                .where(memberships.c.group_id == group_pk, memberships.c.identity_id == member.pk)
                .values(display=member.display)
            )


def _user_columns(write: UserWrite) -> dict[str, Any]:
    return {
        "user_id": write.user_id,
        "email": write.email,
        "email_lower": write.email.lower(),
        "display_name": write.display_name,
        "active": write.active,
        "user_name": write.user_name,
        "user_name_lower": name_key(write.user_name),
        "scim_external_id": write.scim_external_id,
        "resource": dict(write.resource),
        "digest": None,  # see _WRITTEN_COLUMNS
    }


def _group_columns(write: GroupWrite) -> dict[str, Any]:
    return {
        "digest": None,  # see _WRITTEN_COLUMNS
        "name": write.display_name,
        "name_lower": write.display_name.lower(),
        "scim_external_id": write.scim_external_id,
        "resource": dict(write.resource),
        "grant": dict(write.grant),
    }


def _user_record(row: RowMapping, groups_of_user: tuple[tuple[str, str], ...]) -> UserRecord:
    return UserRecord(
        pk=row["id"],
        id=row["external_id"],
        user_name=row["user_name"] or "",
        user_id=row["user_id"],
        active=bool(row["active"]),
        display_name=row["display_name"],
        resource=row["resource"] or {},
        version=row["version"],
        created=row["created_at"],
        updated=row["updated_at"],
        groups=groups_of_user,
    )


def _group_record(row: RowMapping, members: tuple[Member, ...]) -> GroupRecord:
    return GroupRecord(
        pk=row["id"],
        id=row["external_id"],
        display_name=row["name"],
        resource=row["resource"] or {},
        version=row["version"],
        created=row["created_at"],
        updated=row["updated_at"],
        members=members,
    )
