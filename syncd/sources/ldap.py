"""The LDAP directory source: paged, streamed searches of one directory, returned as a Snapshot.

The only module that imports ldap3. `LdapSource(settings).pull(since=...)` never raises for directory trouble: a
failed bind, a dropped connection, a timeout, a size limit, a referral or a suddenly empty result gives a snapshot
with `complete=False`, no identities or groups and the reason in `problems`, so the previous state stands.
`check()` raises `LdapSourceError` (server URLs and reasons, never the password) when no server accepts the bind.

Content sync (RFC 4533, OpenLDAP's syncprov; `content_sync: auto|on|off`): the first pull of a process takes a
cookie for each search (users, groups, disabled users) with an empty refresh, then reads everything with the usual
paged searches, remembering each entry's entryUUID. Each later pull sends a refreshOnly Sync Request with the
cookie: the server answers with the entries changed since, whole, and with what is gone (deleted UUIDs, or the
UUIDs still present), which this object applies to the index it kept; the snapshot then carries only what changed
and what is gone (`change_based`). A cookie the server refuses (`e-syncRefreshRequired`) or a refresh over the
bind account's size limit gives a full pull instead; `pull(true_full=True)` always reads everything (the daily
safety net) and starts the content sync afresh.

Incremental pulls read the users and groups whose modifyTimestamp (uSNChanged on Active Directory) is at or after
the high-water mark. Unchanged members of a changed group are resolved through the `DirectoryIndex` this object
kept from its previous pull, so `pull(since=...)` does a full pull (`incremental=False`) when it has no index
current to exactly that mark (first pull of the process, or after a failed pull).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any
from uuid import UUID

from ldap3 import BASE, DEREF_NEVER, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.protocol.microsoft import dir_sync_control

from syncd import __version__
from syncd.grants import admin_allowed, parse_grant
from syncd.model import Group, Identity, Snapshot
from syncd.settings.ldap import LdapSourceSettings, ResolvedLdap
from syncd.sources._content import Refresh, SyncSession, cookies_from_text, cookies_to_text
from syncd.sources._dirsync import read_change
from syncd.sources._ldap_graph import (
    DirectoryIndex,
    ExpansionCounters,
    GroupRecord,
    IndexChanges,
    assemble_range,
    direct_within,
    expand_group,
    member_key,
    normalise_dn,
)
from syncd.sources._resume import ResumeError, encode_base, encode_delta, restore
from syncd.sources._storable import GROUP_LIMITS, USER_LIMITS, unstorable
from syncd.sources._syncrepl import (
    REFRESH_REQUIRED,
    SYNC_DONE_OID,
    SYNC_INFO_OID,
    SYNC_REQUEST_OID,
    SYNC_STATE_OID,
    SyncMessageError,
    parse_sync_done,
    parse_sync_info,
    parse_sync_state,
    sync_request_value,
)

__all__ = ["LdapCheck", "LdapSource", "LdapSourceError"]

log = logging.getLogger(__name__)

_PAGED = "1.2.840.113556.1.4.319"
_DIRSYNC = "1.2.840.113556.1.4.841"
_INSUFFICIENT_ACCESS = 50
_BINARY_IDS = {"objectguid"}
#: continuation references to Active Directory's own partitions, which hold no users or groups
_AD_PARTITIONS = re.compile(r"/(DC=DomainDnsZones|DC=ForestDnsZones|CN=Configuration),", re.IGNORECASE)
#: ldap3 sometimes formats a nested error as the text of a one-element tuple
_TUPLE_TEXT = re.compile(r"""^\(['"](.*)['"],\)$""")
#: skipped entries logged one by one per pull; beyond that only the counters say how many
_SKIPS_LOGGED = 20
#: the grant of an entry when none is configured (immutable, so one for all)
_NO_GRANT: Mapping[str, Any] = MappingProxyType({})
_RESULT_TEXT = {3: "time limit exceeded", 4: "size limit exceeded", 10: "referral", 32: "no such object (base DN)"}


class LdapSourceError(Exception):
    """No server of a source accepted the connection and bind; the message names each URL and why."""


class _Incomplete(Exception):
    """A search did not return everything it should have."""


class _NoDirSyncRight(Exception):
    """Active Directory refused DirSync: the bind account lacks "Replicating Directory Changes"."""


class _RefreshRequired(Exception):
    """The server cannot continue a content sync from the cookie (e-syncRefreshRequired, or over a size limit)."""


@dataclass(slots=True)
class _ContentSync:
    """What a content-synced source keeps between pulls: the index and each search's cookie and entries."""

    index: DirectoryIndex
    sessions: dict[str, SyncSession]
    #: each group as last emitted (its expanded members and their via), so that a group that gained or lost a few
    #: members is not expanded whole again
    expanded: dict[str, Group] = field(default_factory=dict)
    #: the size of the stored base and of the deltas stored after it (see syncd/sources/_resume.py)
    base_size: int = 0
    delta_size: int = 0

    def cookies(self) -> dict[str, bytes | None]:
        """Each session's cookie."""
        return {name: session.cookie for name, session in self.sessions.items()}

    def begin(self) -> None:
        """Start noting what a pull changes, for the delta stored with its snapshot."""
        self.index.changes = IndexChanges()
        for session in self.sessions.values():
            session.changed.clear()

    def store_with(self, snapshot: Snapshot, fingerprint: str) -> None:
        """Give the snapshot what its cookies go with: the delta of this pull, or a new base once the deltas stored
        since the last one outweigh it."""
        changes, self.index.changes = self.index.changes or IndexChanges(), None  # the records before: garbage now
        delta = encode_delta(self.sessions, self.index, changes)
        for session in self.sessions.values():
            session.changed.clear()
        if self.delta_size + len(delta) > max(self.base_size, 1 << 20):
            self.stored_whole(snapshot, fingerprint)
            return
        self.delta_size += len(delta)
        snapshot.sync_index, snapshot.sync_index_base = delta, False

    def stored_whole(self, snapshot: Snapshot, fingerprint: str) -> None:
        """Give the snapshot the whole state (a base), and note changes from now on."""
        base = encode_base(self.sessions, self.index, fingerprint)
        self.base_size, self.delta_size = len(base), 0
        snapshot.sync_index, snapshot.sync_index_base = base, True


class _Within:
    """The member hint's people as an expansion sees them (member key -> external id, users emitted only), and the
    direct members of each group among them, memoised for one pull."""

    def __init__(self, index: DirectoryIndex, hint: set[str]) -> None:
        self.index, self.hint = index, hint
        self.users_by_key: dict[str, str] = {}
        for external_id in hint:
            recorded = index.users.get(external_id)
            if recorded is not None and recorded[1] and index.user_by_key.get(recorded[0]) == external_id:
                self.users_by_key[recorded[0]] = external_id
        self.direct: dict[str, tuple[frozenset[str], list[str], int]] = {}

    def resolve(self, record: GroupRecord) -> tuple[frozenset[str], list[str], int]:
        """A group's direct members among the hint's people, and its child groups."""
        return direct_within(self.index, record, self.users_by_key)


@dataclass(frozen=True, slots=True)
class LdapCheck:
    """What `check()` found: the server that answered and how many entries the user and group filters return."""

    server: str
    users: int
    groups: int | None
    warnings: tuple[str, ...] = ()


@dataclass(slots=True)
class _Pull:
    """The state of one pull while it runs."""

    snapshot: Snapshot
    index: DirectoryIndex
    started: float = field(default_factory=time.monotonic)
    newest_change: str | None = None
    changed_keys: set[str] = field(default_factory=set)
    changed_groups: set[str] = field(default_factory=set)
    #: member keys (DN or uid) that an entry had before this pull and has no more: a rename
    renamed_keys: set[str] = field(default_factory=set)
    #: groups a user new to the index says it belongs to (memberOf), read again in an incremental pull
    claimed_groups: set[str] = field(default_factory=set)
    skipped_logged: int = 0
    #: while a content sync starts: per search (users, groups, disabled), entryUUID -> external id of each entry read
    uuids: dict[str, dict[bytes, str]] | None = None
    #: users whose own record changed (new, renamed, dropped, mail gained or lost), and each group record replaced
    #: (before, after): what the member hint of a change-based snapshot is made of
    touched_users: set[str] = field(default_factory=set)
    #: groups changed by DirSync member deltas only (not read whole: they may still list a renamed member by its old
    #: name, so they are read again like any unchanged group)
    delta_groups: set[str] = field(default_factory=set)
    group_changes: list[tuple[GroupRecord | None, GroupRecord]] = field(default_factory=list)

    def count(self, name: str, amount: int = 1) -> None:
        """Add to one of the snapshot's counters."""
        self.snapshot.counters[name] = self.snapshot.counters.get(name, 0) + amount

    def warn_skipped(self) -> bool:
        """True for the first few skipped entries of a pull: each is logged, the rest only counted."""
        self.skipped_logged += 1
        return self.skipped_logged <= _SKIPS_LOGGED

    def saw_change(self, value: str | None) -> None:
        """Remember the newest modifyTimestamp seen."""
        if value and (self.newest_change is None or value > self.newest_change):
            self.newest_change = value


class LdapSource:
    """One LDAP directory, pulled in full or incrementally into Snapshots."""

    def __init__(self, settings: LdapSourceSettings) -> None:
        self.settings = settings
        #: how far before the newest change seen (less the pull's duration) the next incremental starts
        self.mark_margin = timedelta(seconds=settings.incremental_overlap_s)
        self.attrs: ResolvedLdap = settings.resolved()
        self._index: DirectoryIndex | None = None
        self._last_groups = 0
        self._pulling = threading.Lock()  # a full and an incremental job of one source must not interleave
        self._content: _ContentSync | None = None
        self._content_supported: bool | None = None  # the root DSE's answer, read once
        self._size_limit_logged = False
        self._dirsync_refused = False  # the bind account lacks the right: the uSNChanged path, said once
        self._resume_pending = False  # the content sync was rebuilt from the store: the next snapshot says so
        self._naming_context: str | None = None

    # -- public -------------------------------------------------------------------------------------------------

    def pull(self, *, since: str | None = None, true_full: bool = False) -> Snapshot:
        """Read the directory: everything when `since` is None, else what changed since that high-water mark.

        With content sync, every pull but the first reads only what changed (whatever `since` says); `true_full`
        reads everything, as the safety net does. A pull continued from the state stored with the cookies (see
        `expect_recorded`) counts `content_sync_resumed`.
        """
        with self._pulling:
            snapshot = self._pull_by_kind(since, true_full)
            if self._resume_pending:
                self._resume_pending = False
                if snapshot.change_based:
                    snapshot.counters["content_sync_resumed"] = 1
            return snapshot

    def _pull_by_kind(self, since: str | None, true_full: bool) -> Snapshot:
        if self.settings.content_sync == "off":
            return self._pull(since)
        if self.settings.dialect == "active_directory":
            if self._dirsync_refused:
                return self._pull(since)
            return self._pull_dirsync(since, true_full=true_full)
        return self._pull_content(since, true_full=true_full)

    @property
    def content_synced(self) -> bool:
        """True once a pull has started a content sync that the next pull continues."""
        return self._content is not None

    def expect_recorded(self, sync_cookie: str | None, stored_index: Callable[[], list[bytes]] | None = None) -> None:
        """Continue the content sync only from what the store recorded. When its cookies are not this object's (the
        last snapshot was not recorded, another replica or process recorded since, or this process is new), the
        next pull continues from the store's cookies and the index stored with them (`stored_index()` reads it),
        or, when there is none or it cannot be used, starts afresh with a full pull."""
        content = self._content
        if content is not None and cookies_to_text(content.cookies()) != sync_cookie:
            log.info("LDAP source %s: the store holds other sync cookies than this process", self.name)
            self._content = content = None
        if content is None and sync_cookie and stored_index is not None and self.settings.content_sync != "off":
            self._content = self._resumed(sync_cookie, stored_index)

    def _resumed(self, sync_cookie: str, stored_index: Callable[[], list[bytes]]) -> _ContentSync | None:
        """The content sync rebuilt from the store, or None (logged) when it cannot be continued."""
        started = time.monotonic()
        try:
            restored = restore(stored_index(), self._fingerprint(), cookies_from_text(sync_cookie))
        except ResumeError as exc:
            log.info(
                "LDAP source %s: the stored content sync state cannot be continued (%s): full pull", self.name, exc
            )
            return None
        index = restored.index
        self._last_groups = len(index.groups)
        self._resume_pending = True
        log.info(
            "LDAP source %s: content sync continued from the stored cookies (%d users, %d groups, %d deltas, %.2f s)",
            self.name,
            len(index.users),
            len(index.groups),
            restored.deltas,
            time.monotonic() - started,
        )
        return _ContentSync(index, restored.sessions, base_size=restored.base_size, delta_size=restored.delta_size)

    def _fingerprint(self) -> str:
        """A digest of the settings that shape the index: a stored index of other settings is not continued. It
        includes syncd's version, so that an upgrade starts afresh too."""
        s = self.settings
        shape = {
            "syncd": __version__,
            "dialect": s.dialect,
            "urls": s.urls,
            "bind_dn": s.bind_dn,
            "users": s.users.model_dump(mode="json"),
            "groups": s.groups.model_dump(mode="json") if s.groups else None,
            "resolved": repr(self.attrs),
        }
        return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()

    def _pull(self, since: str | None) -> Snapshot:
        index = self._index
        incremental = since is not None and index is not None and index.mark == since
        snapshot = Snapshot(source=self.settings.name, incremental=incremental, high_water_mark=since)
        if since is not None and not incremental:
            log.info("LDAP source %s: no index current to %s in this process, doing a full pull", self.name, since)
            snapshot.counters["incremental_fallback"] = 1
        self._index = None  # until this pull succeeds: a failed pull must not leave a half-updated index
        state = _Pull(snapshot, index if incremental and index is not None else DirectoryIndex())
        try:
            with self._session() as (conn, _url):
                self._read(conn, state, since if incremental else None)
        except (LdapSourceError, _Incomplete, LDAPException, OSError) as exc:
            return self._failed(snapshot, exc)
        except Exception as exc:  # a bug or an answer ldap3 cannot parse must not pass for a complete pull
            log.exception("LDAP source %s: unexpected error during the pull", self.name)
            return self._failed(snapshot, exc)
        self._index = state.index
        self._last_groups = len(state.index.groups)
        return snapshot

    def check(self) -> LdapCheck:
        """Try the bind and count what the user and group filters return (for `syncd check-config`)."""
        with self._session() as (conn, url):
            try:
                users = sum(1 for _ in self._search(conn, self.settings.users.base_dn, self.attrs.user_filter, []))
                groups = None
                if self.settings.groups is not None and self.attrs.group_filter is not None:
                    base = self.settings.groups.base_dn
                    groups = sum(1 for _ in self._search(conn, base, self.attrs.group_filter, []))
            except (_Incomplete, LDAPException, OSError) as exc:
                raise LdapSourceError(f"LDAP source {self.name} ({url}): search failed: {_reason(exc)}") from None
            content = self._content_note(conn)
        warnings = [] if users else ["the user filter returns no entries"]
        if url.lower().startswith("ldap://") and not self.settings.start_tls:
            warnings.append(f"{url} without start_tls: the bind password travels unencrypted")
        if content:
            warnings.append(content)
        return LdapCheck(server=url, users=users, groups=groups, warnings=tuple(warnings))

    def _content_note(self, conn: Connection) -> str | None:
        """What check-config says of content sync: off, used, or wanted but not offered by the server."""
        mode = self.settings.content_sync
        if mode == "off":
            return None
        if self.settings.dialect == "active_directory":
            try:
                self._dirsync_search(conn, None, match_nothing=True)
            except _NoDirSyncRight:
                return (
                    "DirSync refused: the bind account lacks the Replicating Directory Changes right; incremental "
                    "pulls use uSNChanged and deletions show at full pulls"
                )
            return "DirSync: used, full pulls read only what changed"
        if self._offers_content_sync(conn):
            return "content sync (RFC 4533): used, full pulls read only what changed"
        if mode == "on":
            return "content_sync is on but the server does not advertise RFC 4533 (syncprov): pulls will fail"
        return "content sync (RFC 4533) not advertised by the server: full pulls read every entry"

    @property
    def name(self) -> str:
        """The source's name."""
        return self.settings.name

    # -- content sync (RFC 4533) ------------------------------------------------------------------------------

    def _pull_content(self, since: str | None, *, true_full: bool) -> Snapshot:
        content, self._content = self._content, None  # until this pull succeeds: a failure starts afresh
        snapshot = Snapshot(source=self.settings.name, high_water_mark=since)
        try:
            with self._session() as (conn, _url):
                if not self._offers_content_sync(conn) and self.settings.content_sync == "auto":
                    state = _Pull(snapshot, DirectoryIndex())
                    self._index = None
                    self._read(conn, state, None)
                    self._index, self._last_groups = state.index, len(state.index.groups)
                    return snapshot
                if content is not None and not true_full:
                    try:
                        self._content = self._content_refresh(conn, content, snapshot)
                        return snapshot
                    except _RefreshRequired as exc:
                        log.info("LDAP source %s: %s; doing a full pull", self.name, exc)
                        snapshot = Snapshot(source=self.settings.name, high_water_mark=since)
                        snapshot.counters["content_sync_fallback"] = 1
                content = None  # garbage before the new index is built: the two never take memory together
                self._content = self._content_start(conn, snapshot)
        except (LdapSourceError, _Incomplete, _RefreshRequired, LDAPException, OSError) as exc:
            self._content = None
            return self._failed(snapshot, exc)
        except Exception as exc:  # a bug or an answer that cannot be parsed must not pass for a complete pull
            self._content = None
            log.exception("LDAP source %s: unexpected error during the pull", self.name)
            return self._failed(snapshot, exc)
        return snapshot

    def _offers_content_sync(self, conn: Connection) -> bool:
        if self.settings.content_sync == "on":
            return True
        if self._content_supported is None:
            conn.search("", "(objectClass=*)", BASE, attributes=["supportedControl"])
            raw = _raw(conn.response[0]) if conn.response else {}
            offered = {v.decode("ascii", "replace") for v in raw.get("supportedcontrol", [])}
            self._content_supported = SYNC_REQUEST_OID in offered
            log.info(
                "LDAP source %s: content sync (RFC 4533) %s",
                self.name,
                "offered by the server: used" if self._content_supported else "not offered: full pulls read everything",
            )
        return self._content_supported

    def _searches(self) -> dict[str, tuple[str, str, list[str]]]:
        """The content-synced searches: name -> (base, filter, attributes)."""
        a, users_base = self.attrs, self.settings.users.base_dn
        found = {"users": (users_base, a.user_filter, self._user_attributes(None))}
        if a.disabled_filter:
            found["disabled"] = (users_base, f"(&{a.user_filter}{a.disabled_filter})", [a.user_external_id_attribute])
        if self.settings.groups is not None and a.group_filter is not None:
            found["groups"] = (self.settings.groups.base_dn, a.group_filter, self._group_attributes())
        return found

    def _content_start(self, conn: Connection, snapshot: Snapshot) -> _ContentSync:
        """A full pull that starts a content sync: each search's cookie first (an empty refresh), then every entry,
        read with the paged searches, with its entryUUID. A change between the two is sent again next time."""
        searches = self._searches()
        cookies = {}
        for name, (base, flt, _) in searches.items():
            cookies[name] = self._sync_search(conn, base, f"(&{flt}(!(objectClass=*)))", [], None).cookie
        state = _Pull(snapshot, DirectoryIndex(), uuids={name: {} for name in searches})
        self._index = None
        self._read(conn, state, None)
        assert state.uuids is not None
        snapshot.sync_cookie = cookies_to_text(cookies)
        snapshot.counters["content_sync_started"] = 1
        self._last_groups = len(state.index.groups)
        sessions = {name: SyncSession(cookies[name], state.uuids[name]) for name in searches}
        content = _ContentSync(state.index, sessions, {group.external_id: group for group in snapshot.groups})
        content.stored_whole(snapshot, self._fingerprint())
        return content

    def _sync_search(
        self, conn: Connection, base: str, search_filter: str, attributes: list[str], cookie: bytes | None
    ) -> Refresh:
        """One refreshOnly search: every message of the answer read into a Refresh."""
        conn.search(
            base,
            search_filter,
            SUBTREE,
            attributes=attributes or ["1.1"],
            controls=[(SYNC_REQUEST_OID, True, sync_request_value(cookie))],
            dereference_aliases=DEREF_NEVER,  # syncprov refuses any other
            time_limit=int(self.settings.search_timeout_s),
        )
        result = conn.result or {}
        if result.get("result") == REFRESH_REQUIRED:
            raise _RefreshRequired(f"the server refused the content sync cookie of {base} (e-syncRefreshRequired)")
        if result.get("result") == 4 and cookie is not None:
            if not self._size_limit_logged:
                self._size_limit_logged = True
                log.warning(
                    "LDAP source %s: a content sync refresh of %s went over the bind account's size limit (a refresh "
                    "is not paged): give it an unlimited size limit, or each such change means a full pull",
                    self.name,
                    base,
                )
            raise _RefreshRequired(f"the content sync refresh of {base} went over the size limit")
        if result.get("result") != 0:
            raise _Incomplete(f"content sync of {base} failed: {_result_text(result)}")
        refresh = Refresh()
        try:
            for message in conn.response or []:
                kind = message.get("type")
                if kind == "searchResEntry":
                    value = _control(message, SYNC_STATE_OID)
                    if value is None:
                        raise _Incomplete(f"content sync of {base}: an entry without a Sync State control")
                    refresh.entry(parse_sync_state(value), message)
                elif kind == "intermediateResponse" and message.get("responseName") == SYNC_INFO_OID:
                    refresh.info(parse_sync_info(message.get("responseValue") or b""))
                elif kind == "searchResRef":
                    raise _Incomplete(f"content sync of {base} was referred elsewhere; referrals are not followed")
            refresh.done(parse_sync_done(_control(result, SYNC_DONE_OID)))
        except SyncMessageError as exc:
            raise _Incomplete(f"content sync of {base}: malformed answer: {exc}") from None
        return refresh

    def _content_refresh(self, conn: Connection, content: _ContentSync, snapshot: Snapshot) -> _ContentSync:
        """Apply what changed since the cookies to the index kept; the snapshot carries the changes and removals."""
        snapshot.incremental = snapshot.change_based = True
        content.begin()
        state = _Pull(snapshot, content.index)
        searches = self._searches()
        if set(searches) != set(content.sessions):
            raise _RefreshRequired("the searches changed")
        refreshes = {
            name: self._sync_search(conn, base, flt, attrs, content.sessions[name].cookie)
            for name, (base, flt, attrs) in searches.items()
        }
        disabled = self._refresh_disabled(content, refreshes.get("disabled"))
        self._refresh_users(conn, state, content, refreshes["users"], disabled)
        if "groups" in refreshes:
            self._refresh_groups(conn, state, content.sessions["groups"], refreshes["groups"])
            self._reread_referencing(conn, state)
        snapshot.member_hint = self._member_hint(state)
        if "groups" in refreshes:
            self._emit_groups(state, "content sync", content)
        for name, refresh in refreshes.items():
            content.sessions[name].cookie = refresh.cookie or content.sessions[name].cookie
        snapshot.sync_cookie = cookies_to_text(content.cookies())
        content.store_with(snapshot, self._fingerprint())
        snapshot.counters["identities"] = len(snapshot.identities)
        snapshot.counters["groups"] = len(snapshot.groups)
        snapshot.counters["removed"] = len(snapshot.removed_identities) + len(snapshot.removed_groups)
        return content

    def _refresh_disabled(self, content: _ContentSync, refresh: Refresh | None) -> tuple[set[str], set[str]]:
        """(the disabled users' external ids now, those whose disabled state changed)."""
        session = content.sessions.get("disabled")
        if session is None or refresh is None:
            return set(), set()
        before = set(session.entries.values())
        for uuid in refresh.gone(session.entries):
            session.drop(uuid)
        attribute = self.attrs.user_external_id_attribute
        for uuid, entry in refresh.changed:
            session.put(uuid, _external_id(_raw(entry), attribute) or "")
        now = set(session.entries.values())
        return now - {""}, (before ^ now) - {""}

    def _refresh_users(
        self,
        conn: Connection,
        state: _Pull,
        content: _ContentSync,
        refresh: Refresh,
        disabled: tuple[set[str], set[str]],
    ) -> None:
        session = content.sessions["users"]
        had_users = bool(session.entries)
        for uuid in refresh.gone(session.entries):
            external_id = session.drop(uuid)
            if external_id:
                self._drop_user(state, external_id)
        sent = set()
        for uuid, entry in refresh.changed:
            sent.add(self._refreshed_user(state, session, uuid, entry, disabled[0]))
        flipped = disabled[1] - sent  # disabled or enabled without a change the users' search saw
        if flipped:
            by_id = {external_id: uuid for uuid, external_id in session.entries.items() if external_id in flipped}
            for uuid in by_id.values():
                entry = self._entry_by_uuid(conn, uuid)
                if entry is not None:
                    self._refreshed_user(state, session, uuid, entry, disabled[0])
        state.count("users_read", len(refresh.changed))
        if had_users and not session.entries:
            raise _Incomplete(
                f"the content sync of {self.settings.users.base_dn} removed every user; treated as a failure so "
                "that nobody is deactivated"
            )

    def _refreshed_user(self, state: _Pull, session: SyncSession, uuid: bytes, entry: Any, disabled: set[str]) -> str:
        """Apply one user sent whole; returns its external id."""
        before = session.entries.get(uuid)
        emitted = len(state.snapshot.identities)
        self._user(state, entry, disabled)
        external_id = _external_id(_raw(entry), self.attrs.user_external_id_attribute) or ""
        session.put(uuid, external_id)
        if before and before != external_id:
            self._drop_user(state, before)
        elif before and len(state.snapshot.identities) == emitted:
            state.snapshot.removed_identities.add(before)  # no longer a person syncd records (no mail, no uid)
            state.touched_users.add(before)
        return external_id

    def _expansion(self, index: DirectoryIndex, external_id: str) -> set[str]:
        """Every user (with an identity) a group reaches, nested as configured."""
        groups = self.settings.groups
        nested, depth = (groups.nested, groups.max_depth) if groups else (False, 1)
        found = set(
            expand_group(index, external_id, nested=nested, max_depth=depth, direct={}, counters=ExpansionCounters())
        )
        return found

    def _member_hint(self, state: _Pull) -> set[str]:
        """Everyone whose memberships this change-based pull may have changed, in any group.

        A membership (or the nested group it comes through) changes only through a user's own record, or through a
        group's member list: the users of the member keys a group gained or lost, all of a child group's users when
        the child itself was gained or lost, and all of a group's users when it is new, renamed or removed.
        """
        hint = set(state.touched_users)
        index = state.index
        for before, after in state.group_changes:
            if before is None or before.dn_key != after.dn_key:
                hint |= self._expansion(index, after.external_id)
                keys: frozenset[str] = after.member_keys | (before.member_keys if before else frozenset())
            else:
                keys = before.member_keys ^ after.member_keys
            for key in keys:
                user = index.user_by_key.get(key)
                if user is not None:
                    hint.add(user)
                child = index.group_by_dn.get(key)
                if child is not None:
                    hint |= self._expansion(index, child)
        return hint

    def _drop_user(self, state: _Pull, external_id: str) -> None:
        state.touched_users.add(external_id)
        before = state.index.drop_user(external_id)
        if before is not None:
            state.changed_keys.add(before[0])
        state.snapshot.removed_identities.add(external_id)

    def _entry_by_uuid(self, conn: Connection, uuid: bytes) -> Any | None:
        text = str(UUID(bytes=uuid))
        flt = f"(&{self.attrs.user_filter}(entryUUID={text}))"
        found = list(self._search(conn, self.settings.users.base_dn, flt, self._user_attributes(None)))
        return next((e for e in found if e.get("type") == "searchResEntry"), None)

    def _refresh_groups(self, conn: Connection, state: _Pull, session: SyncSession, refresh: Refresh) -> None:
        had_groups = bool(session.entries)
        for uuid in refresh.gone(session.entries):
            external_id = session.drop(uuid)
            if external_id:
                self._drop_group(state, external_id)
        for uuid, entry in refresh.changed:
            before = session.entries.get(uuid)
            self._group(conn, state, entry)
            external_id = _external_id(_raw(entry), self.attrs.group_external_id_attribute or "") or ""
            session.put(uuid, external_id)
            if before and before != external_id:
                self._drop_group(state, before)
        state.count("groups_read", len(refresh.changed))
        if had_groups and not session.entries:
            raise _Incomplete(
                f"the content sync of {self.settings.groups.base_dn if self.settings.groups else 'groups'} removed "
                "every group; treated as a failure"
            )

    def _drop_group(self, state: _Pull, external_id: str) -> None:
        if external_id in state.index.groups:
            state.touched_users |= self._expansion(state.index, external_id)  # its members leave its parents
        before = state.index.drop_group(external_id)
        if before is not None:
            state.changed_keys.add(before.dn_key)
        state.changed_groups.discard(external_id)
        state.delta_groups.discard(external_id)
        state.snapshot.removed_groups.add(external_id)

    # -- DirSync (Active Directory) -------------------------------------------------------------------------

    def _pull_dirsync(self, since: str | None, *, true_full: bool) -> Snapshot:
        content, self._content = self._content, None  # until this pull succeeds: a failure starts afresh
        snapshot = Snapshot(source=self.settings.name, high_water_mark=since)
        try:
            with self._session() as (conn, _url):
                if content is not None and not true_full:
                    self._content = self._dirsync_refresh(conn, content, snapshot)
                    return snapshot
                content = None  # garbage before the new index is built: the two never take memory together
                self._content = self._dirsync_start(conn, snapshot)
                return snapshot
        except _NoDirSyncRight:
            self._dirsync_refused = True
            log.warning(
                "LDAP source %s: DirSync refused (the bind account lacks the Replicating Directory Changes right): "
                "incremental pulls use uSNChanged, and deletions show at the next full pull",
                self.name,
            )
        except (LdapSourceError, _Incomplete, LDAPException, OSError) as exc:
            return self._failed(snapshot, exc)
        except Exception as exc:  # a bug or an answer that cannot be parsed must not pass for a complete pull
            log.exception("LDAP source %s: unexpected error during the pull", self.name)
            return self._failed(snapshot, exc)
        return self._pull(since)

    def _dirsync_start(self, conn: Connection, snapshot: Snapshot) -> _ContentSync:
        """A full pull that starts DirSync: the cookie of now first, then every entry with its objectGUID."""
        _, cookie = self._dirsync_search(conn, None, match_nothing=True)
        state = _Pull(snapshot, DirectoryIndex(), uuids={"users": {}, "groups": {}, "disabled": {}})
        self._index = None
        self._read(conn, state, None)
        assert state.uuids is not None
        snapshot.sync_cookie = cookies_to_text({"dirsync": cookie})
        snapshot.counters["content_sync_started"] = 1
        self._last_groups = len(state.index.groups)
        sessions = {
            "dirsync": SyncSession(cookie),
            **{n: SyncSession(None, state.uuids[n]) for n in ("users", "groups")},
        }
        content = _ContentSync(state.index, sessions, {group.external_id: group for group in snapshot.groups})
        content.stored_whole(snapshot, self._fingerprint())
        return content

    def _dirsync_search(
        self, conn: Connection, cookie: bytes | None, *, match_nothing: bool = False
    ) -> tuple[list[Any], bytes | None]:
        """Every object changed since the cookie (in as many rounds as the server needs), and the new cookie."""
        a = self.attrs
        base = self._domain_base(conn)
        wanted = f"(|{a.user_filter}{a.group_filter or ''}(isDeleted=TRUE))"
        search_filter = "(&(objectClass=top)(!(objectClass=top)))" if match_nothing else wanted
        attributes = ["objectGUID", "isDeleted", "userAccountControl", "name"]  # name: a rename or a move
        attributes += self._user_attributes(None) + (self._group_attributes() if self.settings.groups else [])
        attributes = [name for name in dict.fromkeys(attributes) if name and name.lower() != "modifytimestamp"]
        found: list[Any] = []
        for _ in range(100_000):
            control = dir_sync_control(True, False, False, False, True, 1 << 20, cookie)
            conn.search(
                base,
                search_filter,
                SUBTREE,
                attributes=attributes,
                controls=[control],
                time_limit=int(self.settings.search_timeout_s),
            )
            result = conn.result or {}
            if result.get("result") == _INSUFFICIENT_ACCESS:
                raise _NoDirSyncRight(_result_text(result))
            if result.get("result") != 0:
                raise _Incomplete(f"DirSync of {base} failed: {_result_text(result)}")
            found += [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
            value = ((result.get("controls") or {}).get(_DIRSYNC) or {}).get("value") or {}
            cookie = value.get("cookie") or cookie
            if not value.get("more_results"):
                return found, cookie
        raise _Incomplete("DirSync did not finish")

    def _domain_base(self, conn: Connection) -> str:
        """The domain's naming context (DirSync searches from it, never from a subtree)."""
        if self._naming_context is None:
            conn.search("", "(objectClass=*)", BASE, attributes=["defaultNamingContext"])
            raw = _raw(conn.response[0]) if conn.response else {}
            context = _text(raw, "defaultnamingcontext")
            if not context:
                raise _Incomplete("the root DSE has no defaultNamingContext")
            self._naming_context = context
        return self._naming_context

    def _dirsync_refresh(self, conn: Connection, content: _ContentSync, snapshot: Snapshot) -> _ContentSync:
        """Apply the objects DirSync reports: tombstones dropped, member deltas applied, anything else read again."""
        snapshot.incremental = snapshot.change_based = True
        content.begin()
        state = _Pull(snapshot, content.index)
        session, groups = content.sessions["dirsync"], content.sessions["groups"]
        entries, cookie = self._dirsync_search(conn, session.cookie)
        member = self.attrs.member_attribute or "member"
        whole: dict[bytes, None] = {}
        deltas = []
        deleted = set()
        for entry in entries:
            change = read_change(_raw(entry), member)
            if change is None:
                continue
            if change.deleted:
                deleted.add(change.guid)
            elif change.guid in groups.entries and not change.other_changes:
                deltas.append(change)
            else:
                whole[change.guid] = None
        for guid in deleted:
            whole.pop(guid, None)
            self._forget(state, content, guid)
        for guid in whole:
            self._dirsync_reread(conn, state, content, guid)
        for change in deltas:
            if change.guid not in whole and change.guid not in deleted:
                self._apply_member_delta(state, groups.entries[change.guid], change.added, change.removed)
        self._dirsync_finish(conn, state, content, len(entries))
        session.cookie = cookie or session.cookie
        snapshot.sync_cookie = cookies_to_text({"dirsync": session.cookie})
        content.store_with(snapshot, self._fingerprint())
        return content

    def _dirsync_finish(self, conn: Connection, state: _Pull, content: _ContentSync, objects: int) -> None:
        if self.settings.groups is not None:
            self._reread_referencing(conn, state)
            state.changed_groups |= state.delta_groups
        snapshot = state.snapshot
        snapshot.member_hint = self._member_hint(state)
        if self.settings.groups is not None:
            self._emit_groups(state, "dirsync", content)
        if content.sessions["users"].entries == {} and snapshot.removed_identities:
            raise _Incomplete("DirSync removed every user; treated as a failure so that nobody is deactivated")
        snapshot.counters["dirsync_objects"] = objects
        snapshot.counters["identities"] = len(snapshot.identities)
        snapshot.counters["groups"] = len(snapshot.groups)
        snapshot.counters["removed"] = len(snapshot.removed_identities) + len(snapshot.removed_groups)

    def _forget(self, state: _Pull, content: _ContentSync, guid: bytes) -> None:
        """An object deleted, or out of the users' and groups' scope: dropped from what the index holds."""
        user = content.sessions["users"].drop(guid)
        if user:
            self._drop_user(state, user)
        group = content.sessions["groups"].drop(guid)
        if group:
            self._drop_group(state, group)

    def _dirsync_reread(self, conn: Connection, state: _Pull, content: _ContentSync, guid: bytes) -> None:
        """Read one changed object whole, as the user or group searches would see it (filter and base)."""
        a, users, groups = self.attrs, content.sessions["users"], content.sessions["groups"]
        where = f"<GUID={UUID(bytes_le=guid)}>"
        entry = self._read_matching(conn, where, a.user_filter, self._user_attributes(None))
        if entry is not None and _under(entry["dn"], self.settings.users.base_dn):
            groups.drop(guid)
            disabled: set[str] = set()
            external_id = _external_id(_raw(entry), a.user_external_id_attribute)
            locked = f"(&{a.user_filter}{a.disabled_filter})"
            if external_id and a.disabled_filter and self._read_matching(conn, where, locked, ["objectGUID"]):
                disabled.add(external_id)
            self._refreshed_user(state, users, guid, entry, disabled)
            return
        group = None
        if self.settings.groups is not None and a.group_filter is not None:
            group = self._read_matching(conn, where, a.group_filter, self._group_attributes())
        if group is None or not _under(group["dn"], self.settings.groups.base_dn if self.settings.groups else ""):
            self._forget(state, content, guid)
            return
        before = groups.entries.get(guid)
        self._group(conn, state, group)
        external_id = _external_id(_raw(group), a.group_external_id_attribute or "") or ""
        groups.put(guid, external_id)
        if before and before != external_id:
            self._drop_group(state, before)

    def _read_matching(self, conn: Connection, base: str, search_filter: str, attributes: list[str]) -> Any | None:
        conn.search(base, search_filter, BASE, attributes=attributes, time_limit=int(self.settings.search_timeout_s))
        result = conn.result or {}
        if result.get("result") == 32:
            return None
        if result.get("result") != 0:
            raise _Incomplete(f"reading {base} failed: {_result_text(result)}")
        return next((e for e in conn.response or [] if e.get("type") == "searchResEntry"), None)

    def _apply_member_delta(
        self, state: _Pull, external_id: str, added: tuple[bytes, ...], removed: tuple[bytes, ...]
    ) -> None:
        """A group's member values added and removed (DirSync's incremental form), applied to its record."""
        record = state.index.groups.get(external_id)
        if record is None:
            return
        by_uid = self.attrs.member_is_uid
        plus = {sys.intern(member_key(v.decode("utf-8", "replace"), by_uid=by_uid)) for v in added if v}
        minus = {member_key(v.decode("utf-8", "replace"), by_uid=by_uid) for v in removed if v}
        keys = frozenset((record.member_keys - minus) | plus)
        after = GroupRecord(record.external_id, record.name, record.dn, record.dn_key, keys, record.grant)
        state.index.put_group(after)
        state.group_changes.append((record, after))
        state.delta_groups.add(external_id)
        state.count("member_deltas", len(plus) + len(minus))

    # -- connection ---------------------------------------------------------------------------------------------

    def _session(self) -> _Session:
        return _Session(self)

    def _connect(self) -> tuple[Connection, str]:
        reasons = []
        for url in self.settings.urls:
            try:
                return self._bind(url), url
            except (LDAPException, OSError) as exc:
                reasons.append(f"{url}: {self._scrub(_reason(exc))}")
        raise LdapSourceError(f"LDAP source {self.name}: cannot connect and bind: " + "; ".join(reasons))

    def _bind(self, url: str) -> Connection:
        ldaps = url.lower().startswith("ldaps://")
        tls = Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=str(self.settings.ca_file) if self.settings.ca_file else None,
        )
        server = Server(url, use_ssl=ldaps, tls=tls, get_info=NONE, connect_timeout=self.settings.connect_timeout_s)
        password = self.settings.bind_password.get_secret_value() if self.settings.bind_password else None
        conn = Connection(
            server,
            user=self.settings.bind_dn,
            password=password,
            receive_timeout=max(1, math.ceil(self.settings.search_timeout_s)),
            check_names=False,
            read_only=True,
            auto_referrals=False,
            auto_range=False,  # range retrieval is done here, so that a failed range marks the pull incomplete
            raise_exceptions=False,
            return_empty_attributes=False,
        )
        _decode_entries_lean(conn)
        try:
            conn.open()
            if self.settings.start_tls and not ldaps and not conn.start_tls(read_server_info=False):
                raise _BindFailed(f"StartTLS refused: {_result_text(conn.result)}")
            if not conn.bind():
                raise _BindFailed(
                    f"bind as {self.settings.bind_dn or 'anonymous'} refused: {_result_text(conn.result)}"
                )
        except BaseException:
            with contextlib.suppress(Exception):
                conn.unbind()
            raise
        return conn

    def _scrub(self, text: str) -> str:
        secret = self.settings.bind_password.get_secret_value() if self.settings.bind_password else ""
        return text.replace(secret, "********") if secret else text

    def _failed(self, snapshot: Snapshot, exc: BaseException) -> Snapshot:
        if isinstance(exc, LdapSourceError):
            problem = self._scrub(str(exc))
        else:
            reason = str(exc) if isinstance(exc, _Incomplete) else f"{type(exc).__name__}: {_reason(exc)}"
            problem = self._scrub(f"LDAP source {self.name}: {reason}")
        # told once, by syncd.pull (which records the failure): one line per failed pull
        log.debug("%s; the pull is incomplete, nothing will be deactivated from it", problem)
        snapshot.complete = False
        snapshot.problems.append(problem)
        snapshot.identities.clear()
        snapshot.groups.clear()
        snapshot.removed_identities.clear()
        snapshot.removed_groups.clear()
        snapshot.sync_cookie = None
        return snapshot

    # -- searching ----------------------------------------------------------------------------------------------

    def _search(self, conn: Connection, base: str, search_filter: str, attributes: list[str]) -> Iterator[Any]:
        """Entries of a paged subtree search, page by page; raises _Incomplete on any result but success."""
        cookie: bytes | None = None
        while True:
            conn.search(
                base,
                search_filter,
                SUBTREE,
                attributes=attributes or ["1.1"],
                paged_size=self.settings.page_size,
                paged_cookie=cookie,
                time_limit=int(self.settings.search_timeout_s),
            )
            result = conn.result or {}
            if result.get("result") != 0:
                raise _Incomplete(f"search of {base} failed: {_result_text(result)}")
            yield from conn.response or []
            cookie = result.get("controls", {}).get(_PAGED, {}).get("value", {}).get("cookie")
            if not cookie:
                return

    def _entries(self, conn: Connection, state: _Pull, base: str, flt: str, attrs: list[str]) -> Iterator[Any]:
        for entry in self._search(conn, base, flt, attrs):
            if entry.get("type") == "searchResEntry":
                yield entry
                continue
            uris = [str(uri) for uri in entry.get("uri") or []]
            if not uris or not all(_AD_PARTITIONS.search(uri) for uri in uris):
                raise _Incomplete(f"the search of {base} was referred to {', '.join(uris)}; referrals are not followed")
            state.count("referrals_ignored")  # AD's own DNS and configuration partitions hold no people

    def _read(self, conn: Connection, state: _Pull, since: str | None) -> None:
        usn_mark = self._usn_mark(conn) if self.attrs.change_attribute.lower() == "usnchanged" else None
        if usn_mark and since and usn_mark.rsplit(":", 1)[0] != since.rsplit(":", 1)[0]:
            log.info(
                "LDAP source %s: failed over to another domain controller, whose USNs differ: full pull", self.name
            )
            since, state.index = None, DirectoryIndex()
            state.snapshot.incremental = False
            state.count("incremental_fallback")
        self._read_users(conn, state, since)
        if self.settings.groups is not None:
            self._read_groups(conn, state, since)
            self._reread_referencing(conn, state)
            self._emit_groups(state, since)
        self._finish(state, since, usn_mark)

    def _changed_filter(self, search_filter: str, since: str | None) -> str:
        if since is None:
            return search_filter
        value = since.split(":")[-1]
        if self.attrs.change_attribute.lower() == "usnchanged":
            value = str(int(value) + 1)
        return f"(&{search_filter}({self.attrs.change_attribute}>={value}))"

    # -- users --------------------------------------------------------------------------------------------------

    def _user_attributes(self, since: str | None) -> list[str]:
        a = self.attrs
        names = [a.user_external_id_attribute, a.user_id_attribute, a.email_attribute, a.name_attribute]
        if since is not None and not a.member_is_uid:
            names.append("memberOf")  # see _claimed_groups
        if a.member_is_uid:
            names.append(self.settings.groups.member_uid_attribute if self.settings.groups else "uid")
        names += list(self.settings.users.override_attributes.values())
        if a.change_attribute.lower() == "modifytimestamp":
            names.append("modifyTimestamp")
        return list(dict.fromkeys(names))

    def _disabled(self, conn: Connection, state: _Pull, since: str | None) -> set[str]:
        if not self.attrs.disabled_filter:
            return set()
        flt = self._changed_filter(f"(&{self.attrs.user_filter}{self.attrs.disabled_filter})", since)
        attribute = self.attrs.user_external_id_attribute
        found = set()
        for entry in self._entries(conn, state, self.settings.users.base_dn, flt, _with_uuid(state, [attribute])):
            external_id = _external_id(_raw(entry), attribute)
            _remember_uuid(state, "disabled", entry, external_id)
            if external_id:
                found.add(external_id)
        return found

    def _read_users(self, conn: Connection, state: _Pull, since: str | None) -> None:
        disabled = self._disabled(conn, state, since)
        flt = self._changed_filter(self.attrs.user_filter, since)
        seen = 0
        attributes = _with_uuid(state, self._user_attributes(since))
        for entry in self._entries(conn, state, self.settings.users.base_dn, flt, attributes):
            seen += 1
            self._user(state, entry, disabled)
        state.count("users_read", seen)
        if since is None and seen == 0:
            raise _Incomplete(
                f"the user search of {self.settings.users.base_dn} returned no entries; an empty directory is "
                "treated as a failure so that nobody is deactivated"
            )

    def _user(self, state: _Pull, entry: Any, disabled: set[str]) -> None:
        a = self.attrs
        raw = _raw(entry)
        state.saw_change(_text(raw, "modifytimestamp"))
        external_id = _external_id(raw, a.user_external_id_attribute)
        _remember_uuid(state, "users", entry, external_id)
        user_id, email = _text(raw, a.user_id_attribute), _text(raw, a.email_attribute)
        if not external_id or not user_id:
            state.count("skipped_no_id")
            if state.warn_skipped():
                log.warning(
                    "LDAP source %s: %s has no %s or %s, skipped",
                    self.name,
                    entry["dn"],
                    a.user_external_id_attribute,
                    a.user_id_attribute,
                )
            return
        if self._skip_unstorable(state, entry, raw, USER_LIMITS, self._user_fields()):
            return
        key = self._user_key(entry, raw)
        emitted = bool(email) or not self.settings.users.require_email
        before = state.index.put_user(external_id, key, emitted)
        if before != (key, emitted):
            state.changed_keys.update(k for k in (key, before[0] if before else None) if k)
            state.touched_users.add(external_id)
        if before is not None and before[0] != key:
            state.renamed_keys.add(before[0])
        if before is None and "memberof" in raw:
            self._claimed_groups(state, raw["memberof"])
        if not emitted:
            state.count("skipped_no_email")
            if state.warn_skipped():
                log.warning("LDAP source %s: %s has no %s, skipped", self.name, entry["dn"], a.email_attribute)
            return
        state.count("no_email", not email)
        active = external_id not in disabled
        state.count("disabled", not active)
        overrides = self._grant(state, entry["dn"], raw, self.settings.users.override_attributes, None)
        state.snapshot.identities.append(
            Identity(
                source=self.name,
                external_id=external_id,
                user_id=user_id,
                email=email or "",
                display_name=_text(raw, a.name_attribute),
                active=active,
                dn=entry["dn"],
                overrides=overrides,
            )
        )

    def _grant(
        self,
        state: _Pull,
        dn: str,
        raw: dict[str, list[bytes]],
        attributes: Mapping[str, str],
        json_attribute: str | None,
    ) -> Mapping[str, Any]:
        """The grant (or personal override) an entry carries, validated; a malformed one is dropped and counted."""
        if not attributes and not json_attribute:
            return _NO_GRANT  # shared: not an empty dict for each of 100,000 people
        texts = {name: [v.decode("utf-8", "replace") for v in values] for name, values in raw.items()}
        result = parse_grant(dn, texts, attributes, json_attribute)
        for warning in result.warnings:
            state.count("grant_errors")
            log.warning("LDAP source %s: %s", self.name, warning)
        grant = result.grant
        allowed = self.settings.groups.allow_admin_grants_from if self.settings.groups else []
        if grant.get("role") == "proxy_admin" and not admin_allowed(dn, allowed):
            state.count("grant_errors")
            log.warning(
                "LDAP source %s: %s may not grant proxy_admin (not under groups.allow_admin_grants_from); "
                "its role is ignored",
                self.name,
                dn,
            )
            grant = {k: v for k, v in grant.items() if k != "role"}
        return grant

    def _user_fields(self) -> list[tuple[str, str]]:
        a = self.attrs
        return [
            ("external_id", a.user_external_id_attribute),
            ("user_id", a.user_id_attribute),
            ("email", a.email_attribute),
            ("display_name", a.name_attribute),
        ]

    def _skip_unstorable(
        self,
        state: _Pull,
        entry: Any,
        raw: dict[str, list[bytes]],
        limits: dict[str, int],
        fields: list[tuple[str, str]],
    ) -> bool:
        """True (counted, logged with the DN and the attribute) for an entry the store cannot hold: skipped."""
        values: list[tuple[str, str, bytes | None]] = [
            (
                name,
                attribute,
                None if attribute.lower() in _BINARY_IDS else next(iter(raw.get(attribute.lower()) or []), None),
            )
            for name, attribute in fields
        ]
        values.append(("dn", "the DN", str(entry["dn"]).encode("utf-8", "surrogatepass")))
        problem = unstorable(values, limits)
        if problem is None:
            return False
        state.count("skipped_unstorable")
        if state.warn_skipped():
            log.warning("LDAP source %s: %s skipped: %s", self.name, entry["dn"], problem)
        return True

    def _user_key(self, entry: Any, raw: dict[str, list[bytes]]) -> str:
        if self.attrs.member_is_uid:
            uid_attribute = self.settings.groups.member_uid_attribute if self.settings.groups else "uid"
            return (_text(raw, uid_attribute) or "").lower()
        dn = entry["dn"] = sys.intern(entry["dn"])  # interned: groups' member keys then share this one string
        key = normalise_dn(dn)
        return dn if key == dn else sys.intern(key)

    # -- groups -------------------------------------------------------------------------------------------------

    def _group_attributes(self) -> list[str]:
        a = self.attrs
        groups = self.settings.groups
        names = [a.group_external_id_attribute or "", a.group_name_attribute or "cn", a.member_attribute or "member"]
        names += list(groups.mapping_attributes.values()) if groups else []
        names += [groups.grant_attribute] if groups and groups.grant_attribute else []
        if a.change_attribute.lower() == "modifytimestamp":
            names.append("modifyTimestamp")
        return list(dict.fromkeys(names))

    def _read_groups(self, conn: Connection, state: _Pull, since: str | None) -> None:
        assert self.settings.groups is not None and self.attrs.group_filter is not None
        base = self.settings.groups.base_dn
        seen = 0
        for entry in self._entries(
            conn,
            state,
            base,
            self._changed_filter(self.attrs.group_filter, since),
            _with_uuid(state, self._group_attributes()),
        ):
            seen += 1
            self._group(conn, state, entry)
        state.count("groups_read", seen)
        if since is None and seen == 0 and self._last_groups > 0:
            raise _Incomplete(
                f"the group search of {base} returned no entries where the last pull found {self._last_groups}"
            )

    def _group(self, conn: Connection, state: _Pull, entry: Any) -> None:
        a = self.attrs
        raw = _raw(entry)
        state.saw_change(_text(raw, "modifytimestamp"))
        external_id = _external_id(raw, a.group_external_id_attribute or "")
        _remember_uuid(state, "groups", entry, external_id)
        if not external_id:
            state.count("skipped_no_id")
            return
        fields = [("external_id", a.group_external_id_attribute or ""), ("name", a.group_name_attribute or "cn")]
        if self._skip_unstorable(state, entry, raw, GROUP_LIMITS, fields):
            return
        values = self._member_values(conn, entry, raw)
        keys = frozenset(
            sys.intern(member_key(v.decode("utf-8", "replace"), by_uid=a.member_is_uid)) for v in values if v
        )
        groups = self.settings.groups
        grant = (
            self._grant(state, entry["dn"], raw, groups.mapping_attributes, groups.grant_attribute) if groups else {}
        )
        name = _text(raw, a.group_name_attribute or "cn") or entry["dn"]
        record = GroupRecord(external_id, name, entry["dn"], normalise_dn(entry["dn"]), keys, grant)
        before = state.index.put_group(record)
        state.group_changes.append((before, record))
        state.changed_groups.add(external_id)
        if before is None or before.dn_key != record.dn_key:
            state.changed_keys.update(k for k in (record.dn_key, before.dn_key if before else None) if k)
        if before is not None and before.dn_key != record.dn_key:
            state.renamed_keys.add(before.dn_key)

    @staticmethod
    def _claimed_groups(state: _Pull, member_of: list[bytes]) -> None:
        """Remember the known groups a user new to the index is in: they may list it by a DN it had out of scope."""
        for value in member_of:
            group = state.index.group_by_dn.get(normalise_dn(value.decode("utf-8", "replace")))
            if group is not None:
                state.claimed_groups.add(group)

    def _reread_referencing(self, conn: Connection, state: _Pull) -> None:
        """Read again the unchanged groups that list a renamed entry by its old name, or that a new user claims.

        Active Directory (and OpenLDAP's refint) rewrite member values on a rename or a move, but AD leaves the
        group's uSNChanged alone, so only the directory can say what such a group lists now. A user moved into the
        users base is new to the index, so its old DN is unknown: its memberOf names the groups to read again.
        """
        if not state.renamed_keys and not state.claimed_groups:
            return
        stale = [
            record.dn
            for external_id, record in state.index.groups.items()
            if external_id not in state.changed_groups
            and (external_id in state.claimed_groups or not record.member_keys.isdisjoint(state.renamed_keys))
        ]
        for dn in stale:
            entry = self._read_entry(conn, dn, self._group_attributes())
            if entry is not None:
                self._group(conn, state, entry)
        state.count("groups_reread", len(stale))

    def _read_entry(self, conn: Connection, dn: str, attributes: list[str]) -> Any | None:
        conn.search(dn, "(objectClass=*)", BASE, attributes=attributes, time_limit=int(self.settings.search_timeout_s))
        result = conn.result or {}
        if result.get("result") == 32:  # deleted since: the next full pull will say so
            return None
        if result.get("result") != 0 or not conn.response:
            raise _Incomplete(f"reading {dn} failed: {_result_text(result)}")
        return conn.response[0]

    def _member_values(self, conn: Connection, entry: Any, raw: dict[str, list[bytes]]) -> list[bytes]:
        member = (self.attrs.member_attribute or "member").lower()
        ranged = [name for name in raw if name.startswith(member + ";range=")]
        if not ranged:
            return raw.get(member, [])

        def fetch(start: int) -> tuple[str, list[bytes]]:
            return self._range(conn, entry["dn"], f"{member};range={start}-*")

        return assemble_range(ranged[0], raw[ranged[0]], fetch)

    def _range(self, conn: Connection, dn: str, attribute: str) -> tuple[str, list[bytes]]:
        conn.search(dn, "(objectClass=*)", BASE, attributes=[attribute], time_limit=int(self.settings.search_timeout_s))
        if (conn.result or {}).get("result") != 0 or not conn.response:
            raise _Incomplete(f"range retrieval of {attribute} on {dn} failed: {_result_text(conn.result)}")
        raw = _raw(conn.response[0])
        prefix = attribute.split(";", 1)[0] + ";range="
        name = next((n for n in raw if n.startswith(prefix)), attribute)
        return name, raw.get(name, [])

    def _emit_groups(self, state: _Pull, since: str | None, content: _ContentSync | None = None) -> None:
        """Emit the groups a pull changed (every group for a full pull), expanded. With `content` (a change-based
        pull, whose member hint is known), a group emitted before is updated by difference: its members outside
        the hint are as they were, and only the hint's people are looked for in it (see `_expand_by_difference`)."""
        assert self.settings.groups is not None
        index = state.index
        if since is None:
            wanted = set(index.groups)
        else:
            wanted = set(state.changed_groups)
            if state.changed_keys:
                wanted |= {g for g, rec in index.groups.items() if not rec.member_keys.isdisjoint(state.changed_keys)}
            if self.settings.groups.nested:
                wanted |= index.parents_of(wanted)
        counters = ExpansionCounters()
        direct: dict[str, tuple[frozenset[str], list[str], int]] = {}
        known = self._reusable(state, content)
        within = _Within(index, state.snapshot.member_hint or set()) if known else None
        for external_id in wanted:
            record = index.groups[external_id]
            before = known.get(external_id)
            if before is not None and within is not None and len(within.hint) < len(before.members):
                members, via = self._expand_by_difference(state, before, within)
                state.count("groups_by_difference")
            else:
                via = {}
                members = expand_group(
                    index,
                    external_id,
                    nested=self.settings.groups.nested,
                    max_depth=self.settings.groups.max_depth,
                    direct=direct,
                    counters=counters,
                    via=via,
                )
            group = Group(self.name, external_id, record.name, record.dn, members, record.grant, via)
            state.snapshot.groups.append(group)
            if content is not None:
                content.expanded[external_id] = group
        if content is not None:
            for external_id in state.snapshot.removed_groups:
                content.expanded.pop(external_id, None)
        for name in ("dangling_members", "group_cycles", "depth_limit_reached"):
            if getattr(counters, name):
                state.count(name, getattr(counters, name))
                log.warning("LDAP source %s: %s: %d", self.name, name.replace("_", " "), getattr(counters, name))

    @staticmethod
    def _reusable(state: _Pull, content: _ContentSync | None) -> dict[str, Group]:
        """The groups emitted before whose expansion a change-based pull may update (none new to the index)."""
        if content is None or state.snapshot.member_hint is None:
            return {}
        fresh = {after.external_id for before, after in state.group_changes if before is None}
        return {g: group for g, group in content.expanded.items() if g not in fresh}

    def _expand_by_difference(
        self, state: _Pull, before: Group, within: _Within
    ) -> tuple[frozenset[str], Mapping[str, str]]:
        """A group's members and via from its previous expansion: the people outside the member hint are where they
        were (their memberships cannot have changed), and the hint's people are looked for by walking the nesting
        with only them as users, in the order a whole expansion takes (so the same via)."""
        assert self.settings.groups is not None
        via: dict[str, str] = {}
        reached = expand_group(
            state.index,
            before.external_id,
            nested=self.settings.groups.nested,
            max_depth=self.settings.groups.max_depth,
            direct=within.direct,
            counters=ExpansionCounters(),  # counted when the group was expanded whole
            via=via,
            resolve=within.resolve,
        )
        hint = within.hint
        members = before.members
        if reached or not hint.isdisjoint(members):
            members = (members - hint) | reached
        if not via and not _meets(hint, before.via):
            return members, before.via
        kept = dict(before.via)  # copied in C; then only the hint's people are taken out, one by one
        for person in hint if len(hint) < len(kept) else [m for m in kept if m in hint]:
            kept.pop(person, None)
        kept.update(via)
        return members, kept

    # -- high-water mark ----------------------------------------------------------------------------------------

    def _usn_mark(self, conn: Connection) -> str:
        conn.search("", "(objectClass=*)", BASE, attributes=["highestCommittedUSN", "dsServiceName"])
        raw = _raw(conn.response[0]) if conn.response else {}
        usn = _text(raw, "highestcommittedusn")
        if not usn:
            raise _Incomplete("the root DSE has no highestCommittedUSN")
        server = hashlib.sha256((_text(raw, "dsservicename") or "").lower().encode()).hexdigest()[:12]
        return f"usn:{server}:{usn}"  # USNs are per domain controller: the mark says whose it is

    def _finish(self, state: _Pull, since: str | None, usn_mark: str | None) -> None:
        snapshot = state.snapshot
        if state.skipped_logged > _SKIPS_LOGGED:
            log.warning(
                "LDAP source %s: %d more entries skipped, not logged one by one",
                self.name,
                state.skipped_logged - _SKIPS_LOGGED,
            )
        snapshot.counters["identities"] = len(snapshot.identities)
        snapshot.counters["groups"] = len(snapshot.groups)
        if usn_mark is not None:
            snapshot.high_water_mark = usn_mark
        else:
            elapsed = timedelta(seconds=time.monotonic() - state.started) + self.mark_margin
            snapshot.high_water_mark = _timestamp_mark(state.newest_change, elapsed, since)
        state.index.mark = snapshot.high_water_mark


class _BindFailed(LDAPException):
    """The server answered the bind or StartTLS with a refusal."""


class _Session:
    """A bound connection for the length of a `with` block; unbinds on the way out."""

    def __init__(self, source: LdapSource) -> None:
        self.source = source
        self.conn: Connection | None = None

    def __enter__(self) -> tuple[Connection, str]:
        self.conn, url = self.source._connect()
        return self.conn, url

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            with contextlib.suppress(LDAPException, OSError):
                self.conn.unbind()


def _timestamp_mark(newest: str | None, back: timedelta, since: str | None) -> str | None:
    """The next mark: the newest change seen less `back` (the pull's duration and a margin); never before `since`."""
    if newest is None:
        return since
    try:
        seen = datetime.strptime(newest[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return since
    mark = "ts:" + (seen - back).strftime("%Y%m%d%H%M%SZ")
    return max(mark, since) if since and since.startswith("ts:") else mark


def _decode_entries_lean(conn: Connection) -> None:
    """Decode search entries into only a DN and raw values (no schema, no unicode copies, no case-insensitive dict).

    ldap3 otherwise decodes every value twice (raw and unicode) through per-value config look-ups; the source reads
    raw values only, and this is most of the time a pull spends in Python. Other responses decode as usual.
    """
    standard = getattr(conn.strategy, "decode_response_fast", None)
    if standard is None:
        return

    def decode(message: dict[str, Any]) -> dict[str, Any]:
        if message["protocolOp"] != 4:  # searchResEntry
            return dict(standard(message))
        name, attributes = message["payload"][0][3], message["payload"][1][3]
        raw = {bytes(a[3][0][3]).decode("utf-8").lower(): [bytes(v[3]) for v in a[3][1][3]] for a in attributes}
        dn = bytes(name).decode("utf-8", "replace")
        entry = {"type": "searchResEntry", "dn": dn, "raw_attributes": raw, "attributes": {}}
        if message["controls"]:  # a content sync's Sync State control: OID -> {"value": BER bytes}
            entry["controls"] = {
                bytes(c[3][0][3]).decode("ascii"): {"value": next((bytes(r[3]) for r in c[3][1:] if r[2] == 4), None)}
                for c in message["controls"]
            }
        return entry

    conn.strategy.decode_response_fast = decode


def _with_uuid(state: _Pull, attributes: list[str]) -> list[str]:
    """The attributes to read, with entryUUID and objectGUID while a content sync or DirSync starts (later changes
    name entries by them; a server ignores the one it does not have)."""
    if state.uuids is None:
        return attributes
    return list(dict.fromkeys([*attributes, "entryUUID", "objectGUID"]))


def _remember_uuid(state: _Pull, search: str, entry: Any, external_id: str | None) -> None:
    if state.uuids is None:
        return
    raw = _raw(entry)
    if raw.get("entryuuid"):
        state.uuids[search][UUID(raw["entryuuid"][0].decode("ascii")).bytes] = external_id or ""
    elif raw.get("objectguid") and len(raw["objectguid"][0]) == 16:
        state.uuids[search][raw["objectguid"][0]] = external_id or ""


def _meets(people: set[str], via: Mapping[str, str]) -> bool:
    """True when one of `people` is a key of `via` (by whichever side is smaller)."""
    if len(people) < len(via):
        return any(person in via for person in people)
    return any(member in people for member in via)


def _under(dn: str, base: str) -> bool:
    """True when `dn` is `base` or inside it."""
    key, base_key = normalise_dn(dn), normalise_dn(base)
    return key == base_key or key.endswith("," + base_key)


def _control(message: Any, oid: str) -> bytes | None:
    """The value of one control of a decoded message (a search entry, or the final result)."""
    control = (message.get("controls") or {}).get(oid)
    value = control.get("value") if isinstance(control, dict) else None
    return bytes(value) if value is not None else None


def _raw(entry: Any) -> dict[str, list[bytes]]:
    return {name.lower(): values for name, values in (entry.get("raw_attributes") or {}).items()}


def _text(raw: dict[str, list[bytes]], attribute: str) -> str | None:
    values = raw.get(attribute.lower())
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def _external_id(raw: dict[str, list[bytes]], attribute: str) -> str | None:
    values = raw.get(attribute.lower())
    if not values:
        return None
    if attribute.lower() in _BINARY_IDS and len(values[0]) == 16:
        return str(UUID(bytes_le=values[0]))
    return values[0].decode("utf-8", "replace")


def _result_text(result: Any) -> str:
    if not result:
        return "no answer"
    code = result.get("result")
    text = _RESULT_TEXT.get(code) or result.get("description") or f"result {code}"
    message = (result.get("message") or "").strip()
    return f"{text} ({message})" if message else text


def _reason(exc: BaseException) -> str:
    """The exception's text, without the tuple wrapping ldap3 puts around messages of nested errors."""
    value: object = exc
    while True:
        parts = value.args if isinstance(value, BaseException) else value
        if not isinstance(parts, tuple | list) or len(parts) != 1:
            break
        value = parts[0]
    text = str(value) or type(exc).__name__
    wrapped = _TUPLE_TEXT.match(text)
    return (wrapped.group(1) if wrapped else text).replace("\n", " ")
