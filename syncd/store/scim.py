"""What the SCIM service provider stores and queries: users in identities, groups, memberships, indexed values.

A filter arrives here as a `Criterion`, a neutral syntax tree the SCIM layer builds from the SCIM filter once every
attribute is resolved against the published schemas; `criterion_sql` turns it into one SQL expression with bound
parameters. Attributes kept in columns (id, userName, externalId, active, meta.created, meta.lastModified, a group's
displayName and members, a user's groups) are compared there; every other attribute of a user is compared through
`scim_user_values`, one row per attribute value, multi-valued complex attributes having one marker row per item
(`path` = the attribute, `item` = its position) so that a value filter (`emails[type eq "work" and value co "@"]`)
holds for the sub-attributes of one item.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    and_,
    exists,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import FromClause

from syncd.store.tables import groups, identities, memberships, scim_user_values

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
    "UnsupportedPath",
    "UserRecord",
    "UserWrite",
    "criterion_sql",
]


# --- the neutral filter tree -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    """`path op value`; `value` is already in comparison form (see `IndexedValue.key`) or a number, bool, datetime."""

    path: str
    op: str  # eq ne co sw ew gt ge lt le
    value: str | float | bool | datetime | None
    case_exact: bool = False


@dataclass(frozen=True, slots=True)
class Present:
    """`path pr`."""

    path: str


@dataclass(frozen=True, slots=True)
class Not:
    """`not (node)`."""

    node: Criterion


@dataclass(frozen=True, slots=True)
class And:
    """All nodes hold."""

    nodes: tuple[Criterion, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """Any node holds."""

    nodes: tuple[Criterion, ...]


@dataclass(frozen=True, slots=True)
class Item:
    """Some item of the multi-valued attribute `path` satisfies `node` (whose paths are `path.sub`)."""

    path: str
    node: Criterion


@dataclass(frozen=True, slots=True)
class Const:
    """Always true or always false (an attribute another resource type lacks, in a search of both)."""

    value: bool


Criterion = Compare | Present | Not | And | Or | Item | Const


@dataclass(frozen=True, slots=True)
class Sort:
    """Order a list by `path` (a column or an indexed value), numerically when `numeric`."""

    path: str
    descending: bool = False
    numeric: bool = False


class UnsupportedPath(Exception):
    """A filter or sort names an attribute the store cannot compare."""


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


# --- filter translation ------------------------------------------------------------------------------------------

_I, _G, _V = identities.c, groups.c, scim_user_values.c

_USER_COLUMNS: dict[str, ColumnElement[Any]] = {
    "id": _I.external_id,
    "username": _I.user_name_lower,
    "externalid": _I.scim_external_id,
    "active": _I.active,
    "meta.created": _I.created_at,
    "meta.lastmodified": _I.updated_at,
}
_GROUP_COLUMNS: dict[str, ColumnElement[Any]] = {
    "id": _G.external_id,
    "displayname": _G.name_lower,
    "externalid": _G.scim_external_id,
    "meta.created": _G.created_at,
    "meta.lastmodified": _G.updated_at,
}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _compare(column: ColumnElement[Any], op: str, value: Any, *, exact_text: bool, dialect: str) -> ColumnElement[bool]:
    if op in ("co", "sw", "ew"):
        return _substring(column, op, str(value), exact_text=exact_text, dialect=dialect)
    if dialect == "postgresql" and isinstance(value, str) and op in ("gt", "ge", "lt", "le"):
        column = column.collate("C")
    operators = {
        "eq": column.__eq__,
        "ne": column.__ne__,
        "gt": column.__gt__,
        "ge": column.__ge__,
        "lt": column.__lt__,
        "le": column.__le__,
    }
    return operators[op](value)


def _substring(
    column: ColumnElement[Any], op: str, text: str, *, exact_text: bool, dialect: str
) -> ColumnElement[bool]:
    pattern = {"co": "%{}%", "sw": "{}%", "ew": "%{}"}[op].format(_like_escape(text))
    condition: ColumnElement[bool] = column.like(pattern, escape="\\")
    if exact_text and dialect == "sqlite":
        # SQLite's LIKE folds ASCII case: re-check a caseExact attribute byte for byte.
        if op == "co":
            condition = and_(condition, func.instr(column, text) > 0)
        elif op == "sw":
            condition = and_(condition, func.substr(column, 1, len(text)) == text)
        else:
            condition = and_(condition, func.substr(column, func.length(column) - len(text) + 1) == text)
    return condition


@dataclass(frozen=True, slots=True)
class _Scope:
    """Where a path is read: the resource row, a value row of one item, or a related row (member, group)."""

    kind: str  # "user" | "group" | "user_item" | "member" | "user_group"
    owner: ColumnElement[Any]
    item: ColumnElement[Any] | None = None
    row: FromClause | None = None


def criterion_sql(criterion: Criterion, resource: str, dialect: str) -> ColumnElement[bool]:
    """The SQL condition on identities (`resource` = "user") or groups ("group") that `criterion` describes."""
    scope = _Scope("user", _I.id) if resource == "user" else _Scope("group", _G.id)
    return _sql(criterion, scope, dialect)


def _sql(node: Criterion, scope: _Scope, dialect: str) -> ColumnElement[bool]:
    if isinstance(node, Const):
        return true() if node.value else false()
    if isinstance(node, Not):
        return not_(_sql(node.node, scope, dialect))
    if isinstance(node, And):
        return and_(true(), *(_sql(n, scope, dialect) for n in node.nodes))
    if isinstance(node, Or):
        return or_(false(), *(_sql(n, scope, dialect) for n in node.nodes))
    if isinstance(node, Item):
        return _item_sql(node, scope, dialect)
    return _leaf_sql(node, scope, dialect)


def _leaf_sql(node: Compare | Present, scope: _Scope, dialect: str) -> ColumnElement[bool]:
    column = _column(node.path, scope)
    if column is None:
        if scope.kind not in ("user", "user_item"):
            raise UnsupportedPath(node.path)
        return _value_sql(node, scope, dialect)
    if isinstance(node, Present):
        present = column.is_not(None)
        return and_(present, column != "") if _is_text(node.path) else present
    if node.value is None:
        return column.is_(None) if node.op == "eq" else column.is_not(None)
    condition = _compare(column, node.op, node.value, exact_text=node.case_exact, dialect=dialect)
    return or_(column.is_(None), condition) if node.op == "ne" else and_(column.is_not(None), condition)


def _is_text(path: str) -> bool:
    return not path.endswith(("active", "meta.created", "meta.lastmodified"))


def _column(path: str, scope: _Scope) -> ColumnElement[Any] | None:
    if scope.kind == "user":
        return _USER_COLUMNS.get(path)
    if scope.kind == "group":
        return _GROUP_COLUMNS.get(path)
    if scope.kind == "member":
        member_columns: dict[str, ColumnElement[Any]] = {
            "members.value": _I.external_id,
            "members.display": func.lower(_I.display_name),
            "members.type": literal("user"),
        }
        if path not in member_columns:
            raise UnsupportedPath(path)
        return member_columns[path]
    if scope.kind == "user_group":
        group_columns: dict[str, ColumnElement[Any]] = {
            "groups.value": _G.external_id,
            "groups.display": _G.name_lower,
            "groups.type": literal("direct"),
        }
        if path not in group_columns:
            raise UnsupportedPath(path)
        return group_columns[path]
    return None


def _value_sql(node: Compare | Present, scope: _Scope, dialect: str) -> ColumnElement[bool]:
    value = scim_user_values.alias()
    where: list[ColumnElement[bool]] = [value.c.identity_id == scope.owner, value.c.path == node.path]
    if scope.item is not None:
        where.append(value.c.item == scope.item)
    if isinstance(node, Present):
        return exists(select(literal(1)).where(*where))
    if node.value is None:
        found = exists(select(literal(1)).where(*where))
        return not_(found) if node.op == "eq" else found
    op = "eq" if node.op == "ne" else node.op
    if isinstance(node.value, bool):
        where.append(value.c.key == ("true" if node.value else "false"))
    elif isinstance(node.value, int | float):
        where.append(_compare(value.c.number, op, float(node.value), exact_text=False, dialect=dialect))
    else:
        where.append(_compare(value.c.key, op, node.value, exact_text=node.case_exact, dialect=dialect))
    found = exists(select(literal(1)).where(*where))
    return not_(found) if node.op == "ne" else found


def _item_sql(node: Item, scope: _Scope, dialect: str) -> ColumnElement[bool]:
    if scope.kind == "group" and node.path == "members":
        inner = _Scope("member", _G.id)
        query = (
            select(literal(1))
            .select_from(memberships.join(identities, memberships.c.identity_id == _I.id))
            .where(memberships.c.group_id == _G.id, _I.present.is_(True))
        )
        return exists(query.where(_sql(node.node, inner, dialect)))
    if scope.kind == "user" and node.path == "groups":
        inner = _Scope("user_group", _I.id)
        query = (
            select(literal(1))
            .select_from(memberships.join(groups, memberships.c.group_id == _G.id))
            .where(memberships.c.identity_id == _I.id, _G.present.is_(True))
        )
        return exists(query.where(_sql(node.node, inner, dialect)))
    if scope.kind != "user":
        raise UnsupportedPath(node.path)
    marker = scim_user_values.alias()
    inner = _Scope("user_item", marker.c.identity_id, marker.c.item)
    query = select(literal(1)).where(marker.c.identity_id == scope.owner, marker.c.path == node.path)
    return exists(query.where(_sql(node.node, inner, dialect)))


def _order(sort: Sort | None, resource: str) -> list[ColumnElement[Any]]:
    base = _I.id if resource == "user" else _G.id
    if sort is None:
        return [base]
    columns = _USER_COLUMNS if resource == "user" else _GROUP_COLUMNS
    column = columns.get(sort.path)
    if column is None:
        if resource != "user":
            raise UnsupportedPath(sort.path)
        value = scim_user_values.alias()
        target = value.c.number if sort.numeric else value.c.key
        column = (
            select(func.min(target)).where(value.c.identity_id == _I.id, value.c.path == sort.path).scalar_subquery()
        )
    ordered = column.desc() if sort.descending else column.asc()
    return [ordered.nulls_last(), base]


# --- the store ---------------------------------------------------------------------------------------------------


class ScimStore:
    """Opens SCIM sessions on the store's engine: one transaction each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[ScimSession]:
        """One transaction; a write session on SQLite takes the write lock at once (BEGIN IMMEDIATE)."""
        with self.engine.connect() as connection:
            if write and self.dialect == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            with connection.begin() if not connection.in_transaction() else _noop():
                yield ScimSession(connection, self.dialect)
            if connection.in_transaction():
                connection.commit()


@contextmanager
def _noop() -> Iterator[None]:
    yield


class ScimSession:
    """The queries of one SCIM request, inside its transaction."""

    def __init__(self, connection: Connection, dialect: str) -> None:
        self.connection = connection
        self.dialect = dialect

    # users

    def user(self, source: str, id: str, *, lock: bool = False) -> UserRecord | None:
        """The present user `id` of `source`, its groups included; `lock` holds its row until the end."""
        query = select(identities).where(_I.source == source, _I.external_id == id, _I.present.is_(True))
        if lock and self.dialect == "postgresql":
            query = query.with_for_update()
        row = self.connection.execute(query).mappings().first()
        if row is None:
            return None
        return self._users_with_groups([row])[0]

    def users(
        self, source: str, criterion: Criterion, sort: Sort | None, start: int, count: int
    ) -> tuple[int, list[UserRecord]]:
        """(how many present users of `source` match, the `count` of them from the 1-based `start`)."""
        where = and_(_I.source == source, _I.present.is_(True), criterion_sql(criterion, "user", self.dialect))
        total = self.connection.execute(select(func.count()).select_from(identities).where(where)).scalar_one()
        if count <= 0 or total < start:
            return total, []
        query = select(identities).where(where).order_by(*_order(sort, "user")).offset(start - 1).limit(count)
        rows = self.connection.execute(query).mappings().all()
        return total, self._users_with_groups(rows)

    def _users_with_groups(self, rows: Sequence[RowMapping]) -> list[UserRecord]:
        pks = [row["id"] for row in rows]
        by_user: dict[int, list[tuple[str, str]]] = {pk: [] for pk in pks}
        if pks:
            query = (
                select(memberships.c.identity_id, _G.external_id, _G.name)
                .select_from(memberships.join(groups, memberships.c.group_id == _G.id))
                .where(memberships.c.identity_id.in_(pks), _G.present.is_(True))
                .order_by(_G.id)
            )
            for identity_id, group_id, name in self.connection.execute(query):
                by_user[identity_id].append((group_id, name))
        return [_user_record(row, tuple(by_user[row["id"]])) for row in rows]

    def insert_user(self, source: str, id: str, write: UserWrite, now: datetime) -> int:
        """Store a new user; raises DuplicateUserName."""
        values = {**_user_columns(write), "source": source, "external_id": id, "present": True, "dn": None}
        values.update(overrides={}, version=1, created_at=now, updated_at=now)
        try:
            with self.connection.begin_nested():
                pk = self.connection.execute(insert(identities).values(**values).returning(_I.id)).scalar_one()
        except IntegrityError:
            raise DuplicateUserName(write.user_name) from None
        self._index(pk, write.values)
        return int(pk)

    def update_user(self, pk: int, write: UserWrite, now: datetime) -> None:
        """Replace a user's stored fields and indexed values, and bump its version; raises DuplicateUserName."""
        values = {**_user_columns(write), "updated_at": now, "version": _I.version + 1}
        try:
            with self.connection.begin_nested():
                self.connection.execute(update(identities).where(_I.id == pk).values(**values))
        except IntegrityError:
            raise DuplicateUserName(write.user_name) from None
        self.connection.execute(scim_user_values.delete().where(_V.identity_id == pk))
        self._index(pk, write.values)

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
        """The present group `id` of `source`; `lock` holds its row (and so its members) until the end."""
        query = select(groups).where(_G.source == source, _G.external_id == id, _G.present.is_(True))
        if lock and self.dialect == "postgresql":
            query = query.with_for_update()
        row = self.connection.execute(query).mappings().first()
        if row is None:
            return None
        return self._groups_with_members([row], members)[0]

    def groups(
        self, source: str, criterion: Criterion, sort: Sort | None, start: int, count: int, *, members: bool = True
    ) -> tuple[int, list[GroupRecord]]:
        """(how many present groups of `source` match, the `count` of them from the 1-based `start`)."""
        where = and_(_G.source == source, _G.present.is_(True), criterion_sql(criterion, "group", self.dialect))
        total = self.connection.execute(select(func.count()).select_from(groups).where(where)).scalar_one()
        if count <= 0 or total < start:
            return total, []
        query = select(groups).where(where).order_by(*_order(sort, "group")).offset(start - 1).limit(count)
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
        values.update({"grant": {}, "version": 1, "created_at": now, "updated_at": now, "dn": None, "dn_lower": None})
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

    def touch_user_versions(self, pks: Iterable[int], now: datetime) -> None:
        """Bump the version of users whose groups changed (their `groups` attribute did)."""
        chosen = list(pks)
        if chosen:
            self.connection.execute(
                update(identities).where(_I.id.in_(chosen)).values(version=_I.version + 1, updated_at=now)
            )


def _user_columns(write: UserWrite) -> dict[str, Any]:
    return {
        "user_id": write.user_id,
        "email": write.email,
        "email_lower": write.email.lower(),
        "display_name": write.display_name,
        "active": write.active,
        "user_name": write.user_name,
        "user_name_lower": write.user_name.lower(),
        "scim_external_id": write.scim_external_id,
        "resource": dict(write.resource),
    }


def _group_columns(write: GroupWrite) -> dict[str, Any]:
    return {
        "name": write.display_name,
        "name_lower": write.display_name.lower(),
        "scim_external_id": write.scim_external_id,
        "resource": dict(write.resource),
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
