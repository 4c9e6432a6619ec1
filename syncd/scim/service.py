"""The SCIM operations on Users and Groups: validate, write in one transaction, answer, report who changed.

No HTTP here: the router hands over parsed JSON and headers and renders what comes back. Each write runs in one
store transaction: a group write holds the group's row (`SELECT ... FOR UPDATE` on PostgreSQL, the write lock on
SQLite), so concurrent PATCHes on one group serialise and lose no member; on PostgreSQL a user write is one statement
applied only at the version it was computed from (the user as this process last saw it, syncd.scim.recent, else as
read now), retried from a fresh read when another write came first. `on_write` gets the LiteLLM user_ids a
committed write affected.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from scim2_models import (
    ConflictException,
    Context,
    InvalidFilterException,
    InvalidValueException,
    NotFoundException,
    PreconditionFailedException,
    SCIMException,
    UniquenessException,
)

from syncd.grants import grant_from_fields
from syncd.scim.filters import parse_filter, parse_sort
from syncd.scim.patch import (
    Patch,
    apply_member_operations,
    apply_to_model,
    apply_to_stored,
    parse_patch,
    split_member_operations,
    validated_patch,
)
from syncd.scim.recent import RecentUsers
from syncd.scim.resources import (
    changed_keys,
    check_length,
    derive_user,
    etag,
    group_json,
    index_values,
    stored_form,
    tolerate,
    user_json,
    validate_resource,
)
from syncd.scim.schemas import GRANT_EXTENSION, ResourceKind, resource_kinds
from syncd.settings.scim import ScimSettings
from syncd.store.scim import (
    Criterion,
    DuplicateUserName,
    GroupRecord,
    GroupWrite,
    Member,
    ScimSession,
    ScimStore,
    UnsupportedPath,
    UserRecord,
    UserWrite,
    name_key,
)
from syncd.store.tables import MAX_TEXT, MAX_USER_ID

__all__ = ["ListQuery", "ScimService"]

_SNAKE = re.compile(r"(?<=[a-z0-9])([A-Z])")
_log = logging.getLogger("syncd.scim")

LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
_ATTEMPTS = 5
_READ_ONLY_KEYS = {"id", "meta", "schemas", "groups"}
#: the most members one group write may add (pending ones included): each is looked up and written under the
#: group's lock, which no request may hold for much more than a second
MAX_NEW_MEMBERS = 20_000
#: roles LiteLLM refuses for users (422), though the Terraform resource lists them
_USER_REFUSED_ROLES = {"team", "customer"}
#: users remembered as the base of an optimistic PATCH/PUT (a few hundred bytes each)
RECENT_USERS = 10_000


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The parameters of a list or a search (RFC 7644 §3.4.2)."""

    filter: str | None = None
    sort_by: str | None = None
    descending: bool = False
    start_index: int = 1
    count: int | None = None
    attributes: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


def _check_if_match(if_match: str | None, version: int) -> None:
    if not _matches(if_match, version):
        raise PreconditionFailedException(detail=f"the resource is at version {etag(version)}")


def _matches(if_match: str | None, version: int) -> bool:
    if if_match is None or if_match.strip() == "*":
        return True
    return str(version) in {tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")}


class ScimService:
    """Users and Groups of each source, kept in the store."""

    def __init__(
        self, settings: ScimSettings, store: ScimStore, on_write: Callable[[set[str]], None] | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.on_write = on_write
        self.kinds = resource_kinds()
        self.users_kind, self.groups_kind = self.kinds["User"], self.kinds["Group"]
        self.recent = RecentUsers(RECENT_USERS if store.optimistic else 0)

    def _written(self, user_ids: Iterable[str]) -> None:
        affected = {user_id for user_id in user_ids if user_id}
        if affected and self.on_write is not None:
            try:
                self.on_write(affected)
            except Exception:  # the write is committed: the next scheduled reconcile still picks it up
                _log.exception("on_write failed after a committed SCIM write")

    # --- reading ------------------------------------------------------------------------------------------------

    def get_user(self, source: str, id: str, base_url: str) -> dict[str, Any]:
        """The user `id`, or NotFoundException."""
        with self.store.session() as session:
            record = session.user(source, id)
        if record is None:
            raise NotFoundException(detail=f"no User {id}")
        self.recent.put(source, record)
        return user_json(record, base_url)

    def get_group(self, source: str, id: str, base_url: str, *, members: bool = True) -> dict[str, Any]:
        """The group `id`, or NotFoundException."""
        with self.store.session() as session:
            record = session.group(source, id, members=members)
        if record is None:
            raise NotFoundException(detail=f"no Group {id}")
        return group_json(record, base_url, members=members)

    def criterion(self, kind: ResourceKind, text: str | None, *, unknown: set[str] | None = None) -> Criterion:
        """The parsed filter; invalidFilter when too long or not understood (`unknown`: lenient, collected)."""
        if text is not None and len(text) > self.settings.max_filter_length:
            raise InvalidFilterException(detail=f"the filter is longer than {self.settings.max_filter_length}")
        return parse_filter(text, kind, lenient=unknown is not None, unknown=unknown)

    def list_resources(self, kind: ResourceKind, source: str, query: ListQuery, base_url: str) -> dict[str, Any]:
        """A ListResponse of one resource type."""
        criterion = self.criterion(kind, query.filter)
        sort = parse_sort(query.sort_by, query.descending, kind)
        start, count = max(query.start_index, 1), self._count(query.count)
        members = not _excludes_members(query)
        try:
            with self.store.session() as session:
                total, resources = self._page(session, kind, source, criterion, sort, start, count, members, base_url)
        except UnsupportedPath as exc:
            raise InvalidFilterException(detail=f"{exc.args[0]} cannot be filtered or sorted on") from None
        return _list_response(total, start, resources)

    def search_all(self, source: str, query: ListQuery, base_url: str) -> dict[str, Any]:
        """A ListResponse over Users then Groups (POST /.search); an attribute one type lacks is false there."""
        start, count = max(query.start_index, 1), self._count(query.count)
        unknown_to_users: set[str] = set()
        unknown_to_groups: set[str] = set()
        users = self.criterion(self.users_kind, query.filter, unknown=unknown_to_users)
        groups = self.criterion(self.groups_kind, query.filter, unknown=unknown_to_groups)
        if unknown_to_users & unknown_to_groups:
            named = ", ".join(sorted(unknown_to_users & unknown_to_groups))
            raise InvalidFilterException(detail=f"no resource type has the attributes {named}")
        try:
            with self.store.session() as session:
                user_total, found = self._page(
                    session, self.users_kind, source, users, None, start, count, True, base_url
                )
                group_start = max(start - user_total, 1)
                group_count = count - len(found)
                group_total, more = self._page(
                    session, self.groups_kind, source, groups, None, group_start, group_count, True, base_url
                )
        except UnsupportedPath as exc:
            raise InvalidFilterException(detail=f"{exc.args[0]} cannot be filtered on") from None
        return _list_response(user_total + group_total, start, found + more)

    def _count(self, requested: int | None) -> int:
        limit = self.settings.max_results
        return limit if requested is None else max(0, min(requested, limit))

    def _page(
        self,
        session: ScimSession,
        kind: ResourceKind,
        source: str,
        criterion: Criterion,
        sort: Any,
        start: int,
        count: int,
        members: bool,
        base_url: str,
    ) -> tuple[int, list[dict[str, Any]]]:
        if kind.name == "User":
            total, users = session.users(source, criterion, sort, start, count)
            if len(users) == 1:  # a lookup (userName eq ...), as Okta and Entra make before a PATCH
                self.recent.put(source, users[0])
            return total, [user_json(record, base_url) for record in users]
        total, groups = session.groups(source, criterion, sort, start, count, members=members)
        return total, [group_json(record, base_url, members=members) for record in groups]

    # --- users --------------------------------------------------------------------------------------------------

    def create_user(self, source: str, payload: Any, base_url: str) -> dict[str, Any]:
        """POST /Users: 409 uniqueness when a present user of this source has the userName."""
        kind = self.users_kind
        body = stored_form(
            kind, validate_resource(kind, tolerate(payload, base_url), Context.RESOURCE_CREATION_REQUEST)
        )
        id = str(uuid.uuid4())
        write = derive_user(body, id, self.settings.user_id_attribute, kind)
        now = _now()
        try:
            with self.store.session(write=True, atomic=True) as session:
                pk = session.insert_user(source, id, write, now)
        except DuplicateUserName:
            raise UniquenessException(detail=f"userName {write.user_name!r} is already taken") from None
        claimed = self._claim_pending(source, Member(pk, id, write.user_id, write.display_name), write)
        self._written([write.user_id])
        record = UserRecord(
            pk, id, write.user_name, write.user_id, write.active, write.display_name, write.resource, 1, now, now
        )
        if claimed:
            with self.store.session() as session:
                record = session.user(source, id) or record
        self.recent.put(source, record)
        return user_json(record, base_url)

    def _claim_pending(self, source: str, member: Member, write: UserWrite) -> list[int]:
        """The groups that named this user before it existed take it in now (their own transaction, after the
        user's: a crash in between leaves the member pending, and the provider's next group write settles it).
        A rewrite that changes the userName or externalId does the same (`_rewritten`)."""
        keys = [member.id, str(write.scim_external_id or "")]
        with self.store.session(write=True) as session:
            return session.claim_pending(source, member, keys, write.user_name)

    def replace_user(self, source: str, id: str, payload: Any, base_url: str, if_match: str | None) -> dict[str, Any]:
        """PUT /Users/{id}: the whole user (Okta sends id, meta and groups too: read-only, ignored)."""
        kind = self.users_kind
        resource = validate_resource(kind, tolerate(payload, base_url), Context.RESOURCE_REPLACEMENT_REQUEST)
        return self._rewrite_user(source, id, base_url, if_match, lambda _current: stored_form(kind, resource))

    def patch_user(self, source: str, id: str, payload: Any, base_url: str, if_match: str | None) -> dict[str, Any]:
        """PATCH /Users/{id}: 200 with the resource."""
        kind = self.users_kind
        patch = parse_patch(kind, payload, base_url)

        def change(current: UserRecord) -> dict[str, Any] | None:
            if patch.simple is not None:
                return apply_to_stored(kind, patch, current.resource)
            resource = apply_to_model(kind, patch, user_json(current, base_url))
            body = None if resource is None else stored_form(kind, resource)
            return None if body is None or body == current.resource else body

        return self._rewrite_user(source, id, base_url, if_match, change)

    def _rewrite_user(
        self,
        source: str,
        id: str,
        base_url: str,
        if_match: str | None,
        change: Callable[[UserRecord], dict[str, Any] | None],
    ) -> dict[str, Any]:
        """Read, change, write: under the row lock, or (PostgreSQL) as one statement at the version read, retried."""
        for _attempt in range(_ATTEMPTS):
            written = self._try_rewrite_user(source, id, base_url, if_match, change)
            if written is not None:
                return written
        raise ConflictException(detail="the user kept changing under this request; send it again")

    def _try_rewrite_user(
        self,
        source: str,
        id: str,
        base_url: str,
        if_match: str | None,
        change: Callable[[UserRecord], dict[str, Any] | None],
    ) -> dict[str, Any] | None:
        """One attempt: from the user as last seen (no read) when it can be used, else from the row read now.

        None when another write came first (the caller tries again)."""
        seen = self.recent.get(source, id)
        if seen is not None and _matches(if_match, seen.version):
            written = self._rewrite_seen(source, seen, base_url, change)
            if written is not None:
                return written
            self.recent.drop(source, id)
        with self.store.session(write=True, atomic=True) as session:
            current = self._locked_user(session, source, id, if_match)
            self.recent.put(source, current)
            body = change(current)
            if body is None:
                return user_json(current, base_url)
            record = self._store_user(session, current, self._derive_rewrite(current, body))
        return self._rewritten(source, current, record, base_url)

    def _rewrite_seen(
        self, source: str, seen: UserRecord, base_url: str, change: Callable[[UserRecord], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """The write computed from `seen`, applied if the user is still at its version; None when it is not, or when
        `seen` cannot decide: a change to nothing, or an error that the current state might not give."""
        try:
            body = change(seen)
            if body is None:
                return None
            write = self._derive_rewrite(seen, body)
        except SCIMException:
            return None
        with self.store.session(write=True, atomic=True) as session:
            record = self._store_user(session, seen, write)
        return self._rewritten(source, seen, record, base_url)

    def _derive_rewrite(self, current: UserRecord, body: dict[str, Any]) -> UserWrite:
        """What rewriting `current` as `body` stores; indexed values only of the attributes that change."""
        changed = changed_keys(current.resource, body)
        return derive_user(body, current.id, self.settings.user_id_attribute, self.users_kind, indexed=changed)

    def _store_user(self, session: ScimSession, current: UserRecord, write: UserWrite) -> UserRecord | None:
        """Write `write` (from `_derive_rewrite`) over `current` (the row held, or in an atomic session the version
        expected); the user as written, or None when another write came first."""
        now, kind = _now(), self.users_kind
        changed = changed_keys(current.resource, write.resource)
        before = tuple(index_values(current.resource, kind, keys=changed))
        try:
            if session.atomic:
                groups = session.update_user_at(current.pk, write, now, before=before, version=current.version)
                if groups is None:
                    return None
            else:
                renamed = name_key(write.user_name) != name_key(current.user_name)
                session.update_user(current.pk, write, now, renamed=renamed, before=before)
                groups = current.groups
        except DuplicateUserName:
            raise UniquenessException(detail="userName is already taken") from None
        return UserRecord(
            current.pk, current.id, write.user_name, write.user_id, write.active, write.display_name,
            dict(write.resource), current.version + 1, current.created, now, groups,
        )  # fmt: skip

    def _rewritten(
        self, source: str, before: UserRecord, record: UserRecord | None, base_url: str
    ) -> dict[str, Any] | None:
        """After the commit: remember the user as written, report who changed, answer (None: not written)."""
        if record is None:
            return None
        renamed = name_key(record.user_name) != name_key(before.user_name)
        if renamed or record.resource.get("externalId") != before.resource.get("externalId"):
            # a name or externalId a group named while pending may be this user's now
            member = Member(record.pk, record.id, record.user_id, record.display_name)
            keys = [record.id, str(record.resource.get("externalId") or "")]
            with self.store.session(write=True) as session:
                if session.claim_pending(source, member, keys, record.user_name):
                    record = session.user(source, record.id) or record
        self.recent.put(source, record)
        self._written([before.user_id, record.user_id])
        return user_json(record, base_url)

    def _locked_user(self, session: ScimSession, source: str, id: str, if_match: str | None) -> UserRecord:
        current = session.user(source, id, lock=True)
        if current is None:
            raise NotFoundException(detail=f"no User {id}")
        _check_if_match(if_match, current.version)
        return current

    def delete_user(self, source: str, id: str, if_match: str | None) -> None:
        """DELETE /Users/{id}: the user is marked gone and inactive (so suspended); a GET then answers 404."""
        with self.store.session(write=True) as session:
            current = self._locked_user(session, source, id, if_match)
            session.delete_user(current.pk, _now())
        self.recent.drop(source, id)
        self._written([current.user_id])

    # --- groups -------------------------------------------------------------------------------------------------

    def create_group(self, source: str, payload: Any, base_url: str) -> dict[str, Any]:
        """POST /Groups: stored whether or not a mapping names it; a member that is no user of this source yet is
        kept pending (RFC 7644 has no referential integrity) and joins when that user arrives."""
        kind = self.groups_kind
        resource = validate_resource(kind, tolerate(payload, base_url), Context.RESOURCE_CREATION_REQUEST)
        body, wanted = stored_form(kind, resource), _member_ids(resource)
        write = _group_write(body, allow_admin=self.settings.allow_admin_grants)
        id, now = str(uuid.uuid4()), _now()
        with self.store.session(write=True) as session:
            members, pending = _resolve_members(session, source, wanted)
            pk = session.insert_group(source, id, write, now)
            session.change_members(pk, source, add=members)
            session.change_pending(pk, source, add=pending)
        self._written(member.user_id for member in members)
        record = GroupRecord(pk, id, body["displayName"], body, 1, now, now, tuple(members))
        return group_json(record, base_url)

    def replace_group(self, source: str, id: str, payload: Any, base_url: str, if_match: str | None) -> dict[str, Any]:
        """PUT /Groups/{id}: the whole group, members included."""
        kind = self.groups_kind
        resource = validate_resource(kind, tolerate(payload, base_url), Context.RESOURCE_REPLACEMENT_REQUEST)
        change = _GroupChange(stored_form(kind, resource), _member_ids(resource))
        return self._rewrite_group(source, id, base_url, if_match, lambda _current: change)

    def patch_group(self, source: str, id: str, payload: Any, base_url: str, if_match: str | None) -> dict[str, Any]:
        """PATCH /Groups/{id}: Okta's and Entra's member adds and removes, renames; 200 with the group.

        Member operations (add, remove by value list or `members[value eq "x"]`, replace) are applied as one set
        operation on the member ids, so their cost grows with the request, not with operations x members; the
        other operations go through scim2-models on the group without its members."""
        kind = self.groups_kind
        patch = parse_patch(kind, payload, base_url, plain_first=False)
        split = split_member_operations(patch.operations)
        if split is None or split[1]:  # what the models apply is validated before the group is locked
            patch = replace(patch, validated=validated_patch(kind, patch.operations if split is None else split[1]))

        def change(current: GroupRecord) -> _GroupChange | None:
            everyone = {m.id: m.display for m in current.members} | dict(current.pending)
            if split is None:  # a member operation set arithmetic cannot express: the whole patch, by the models
                resource = apply_to_model(kind, patch, group_json(_with_pending(current), base_url))
                if resource is None:
                    return None
                return _GroupChange(stored_form(kind, resource), _member_ids(resource))
            member_ops, others = split
            wanted = apply_member_operations(everyone, member_ops)
            body: dict[str, Any] = dict(current.resource)
            if others:
                rest = Patch(others, None, patch.validated)
                resource = apply_to_model(kind, rest, group_json(replace(current, members=()), base_url))
                body = stored_form(kind, resource) if resource is not None else body
            return _GroupChange(body, wanted)

        return self._rewrite_group(source, id, base_url, if_match, change)

    def _rewrite_group(
        self,
        source: str,
        id: str,
        base_url: str,
        if_match: str | None,
        change: Callable[[GroupRecord], _GroupChange | None],
    ) -> dict[str, Any]:
        now = _now()
        with self.store.session(write=True) as session:
            current = self._locked_group(session, source, id, if_match)
            changed = change(current)
            if changed is None:
                return group_json(current, base_url)
            body, wanted = changed.body, changed.members
            before = {member.id: member for member in current.members}
            found, pending = _resolve_members(session, source, wanted, known=before)
            after = {member.id: member for member in found}
            added = [after[i] for i in after.keys() - before.keys()]
            removed = [before[i] for i in before.keys() - after.keys()]
            relabelled = [after[i] for i in after.keys() & before.keys() if after[i].display != before[i].display]
            was_pending = dict(current.pending)
            new_pending = {v: d for v, d in pending.items() if v not in was_pending or was_pending[v] != d}
            gone_pending = [v for v in was_pending if v not in pending or v in new_pending]
            if body == current.resource and not (added or removed or relabelled or new_pending or gone_pending):
                return group_json(current, base_url)
            write = _group_write(body, allow_admin=self.settings.allow_admin_grants)
            session.update_group(current.pk, write, now)
            session.change_members(current.pk, source, add=added, remove=removed, relabel=relabelled)
            session.change_pending(current.pk, source, add=new_pending, remove=gone_pending)
        old_grant = _grant(current.display_name, dict(current.resource), self.settings.allow_admin_grants, quiet=True)
        everyone = body.get("displayName") != current.display_name or write.grant != old_grant
        self._written(m.user_id for m in (*added, *removed, *(after.values() if everyone else ())))
        ordered = tuple(sorted(after.values(), key=lambda member: member.pk))
        record = GroupRecord(
            current.pk, id, body["displayName"], body, current.version + 1, current.created, now, ordered
        )
        return group_json(record, base_url)

    def _locked_group(self, session: ScimSession, source: str, id: str, if_match: str | None) -> GroupRecord:
        current = session.group(source, id, lock=True)
        if current is None:
            raise NotFoundException(detail=f"no Group {id}")
        _check_if_match(if_match, current.version)
        return current

    def delete_group(self, source: str, id: str, if_match: str | None) -> None:
        """DELETE /Groups/{id}: the group is marked gone and emptied; its members are reconciled."""
        with self.store.session(write=True) as session:
            current = self._locked_group(session, source, id, if_match)
            session.delete_group(current.pk, _now())
        self._written(member.user_id for member in current.members)


def _excludes_members(query: ListQuery) -> bool:
    if query.attributes:
        return not any(name.lower().split(".")[0].endswith("members") for name in query.attributes)
    return any(
        name.lower() in ("members", "urn:ietf:params:scim:schemas:core:2.0:group:members") for name in query.excluded
    )


def _list_response(total: int, start: int, resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


def _group_write(body: dict[str, Any], *, allow_admin: bool = False) -> GroupWrite:
    display_name = str(body.get("displayName") or "")
    check_length("displayName", display_name, MAX_TEXT)
    check_length("externalId", str(body.get("externalId") or ""), MAX_TEXT)
    _refuse_user_roles(body)
    grant = _grant(display_name, body, allow_admin)
    return GroupWrite(display_name=display_name, scim_external_id=body.get("externalId"), resource=body, grant=grant)


def _grant(display_name: str, body: dict[str, Any], allow_admin: bool, *, quiet: bool = False) -> dict[str, Any]:
    """The group's grant from syncd's Group extension, validated.

    As for a grant kept in a directory, a malformed one is stored as sent but grants nothing, with a warning naming
    the group, the attribute and the problem; proxy_admin is dropped unless scim.allow_admin_grants.
    """
    extension = next((v for k, v in body.items() if k.lower() == GRANT_EXTENSION.lower()), None)
    if not extension:
        return {}
    fields = {_SNAKE.sub(r"_\1", name).lower(): value for name, value in extension.items()}
    result = grant_from_fields(f"SCIM group {display_name!r}: {GRANT_EXTENSION}", fields)
    for warning in result.warnings if not quiet else ():
        _log.warning("%s", warning)
    if result.grant.get("role") == "proxy_admin" and not allow_admin:
        if not quiet:
            _log.warning(
                "SCIM group %r may not grant proxy_admin (scim.allow_admin_grants is false): its role is ignored",
                display_name,
            )
        return {k: v for k, v in result.grant.items() if k != "role"}
    return result.grant


def _refuse_user_roles(body: dict[str, Any]) -> None:
    """A grant whose role LiteLLM refuses for users (422 for team and customer) would fail on every run: 400 now."""
    extension = next((v for k, v in body.items() if k.lower() == GRANT_EXTENSION.lower()), None)
    role = extension.get("role") if isinstance(extension, dict) else None
    if isinstance(role, str) and role.strip().lower() in _USER_REFUSED_ROLES:
        raise InvalidValueException(
            detail=f"{GRANT_EXTENSION}:role {role!r} is refused by LiteLLM for users; use one of "
            "proxy_admin, proxy_admin_viewer, internal_user, internal_user_viewer"
        )


@dataclass(frozen=True, slots=True)
class _GroupChange:
    """A group write: its stored form, and the member values wanted (users or not yet) with their display."""

    body: dict[str, Any]
    members: dict[str, str | None]


def _with_pending(current: GroupRecord) -> GroupRecord:
    """The group with its pending members listed as members (so that the models' PATCH sees every value)."""
    extra = tuple(Member(0, value, "", display) for value, display in current.pending)
    return replace(current, members=current.members + extra) if extra else current


def _member_ids(resource: Any) -> dict[str, str | None]:
    """The members' ids (in order, once each) with the display the provider gave."""
    wanted: dict[str, str | None] = {}
    for member in resource.members or []:
        if member.value:
            wanted[str(member.value)] = member.display or wanted.get(str(member.value))
    return wanted


def _resolve_members(
    session: ScimSession, source: str, wanted: dict[str, str | None], *, known: Mapping[str, Member] | None = None
) -> tuple[list[Member], dict[str, str | None]]:
    """(the members that are users of this source, the values that are not: pending, with their display).

    Only the values that are not `known` members already are looked up, so a write costs what it changes, not what
    the group holds."""
    known = known or {}
    new = [value for value in wanted if value not in known]
    if len(new) > MAX_NEW_MEMBERS:
        raise InvalidValueException(
            detail=f"a group write adds {len(new)} members, over {MAX_NEW_MEMBERS}: send them in several PATCHes"
        )
    for display in wanted.values():
        check_length("a member display", display or "", MAX_TEXT)
    for value in new:
        check_length("a member value", value, MAX_USER_ID)
    found = dict(session.members_by_id(source, new))
    found.update((value, known[value]) for value in wanted if value in known)
    pending = {value: display for value, display in wanted.items() if value not in found}
    members = [
        replace(found[id], display=display or found[id].display) for id, display in wanted.items() if id in found
    ]
    return members, pending
