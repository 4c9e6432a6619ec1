"""The client side of an RFC 4533 refresh: what one refreshOnly search said, and what it means for the entries known.

Purely computational, no I/O: the LDAP source feeds each message of a refresh into a `Refresh` and then asks which
of the entries it knew are gone. The rules (RFC 4533 section 3.3.1): entries sent whole were added or changed; in a
present phase the server names every unchanged entry (a Sync State "present", or a `syncIdSet` with refreshDeletes
FALSE), so any known entry neither named nor sent is gone; in a delete phase it names the deleted ones (a Sync State
"delete", or a `syncIdSet` with refreshDeletes TRUE) and what it does not name is unchanged. The Sync Done control
(or the refreshPresent / refreshDelete Sync Info) tells which phase the refresh was in.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from syncd.sources._syncrepl import ADD, DELETE, MODIFY, PRESENT, SyncDone, SyncInfo, SyncState

__all__ = ["Refresh", "SyncSession", "cookies_from_text", "cookies_to_text"]


@dataclass(slots=True)
class SyncSession:
    """One content-synced search (the users, the groups, or the disabled users): its cookie and the entries it holds,
    entryUUID -> external id ("" for an entry without one)."""

    cookie: bytes | None = None
    entries: dict[bytes, str] = field(default_factory=dict)
    #: the entries put or dropped since the last `changed.clear()` (what a stored delta holds)
    changed: set[bytes] = field(default_factory=set)

    def put(self, uuid: bytes, external_id: str) -> None:
        """Record an entry read."""
        self.entries[uuid] = external_id
        self.changed.add(uuid)

    def drop(self, uuid: bytes) -> str | None:
        """Forget an entry; returns its external id (None when unknown)."""
        self.changed.add(uuid)
        return self.entries.pop(uuid, None)


@dataclass(slots=True)
class Refresh:
    """What one refreshOnly search of a session said, message by message."""

    #: entries sent whole (added, changed, renamed, or come into scope), with their UUID, in the order sent
    changed: list[tuple[bytes, Any]] = field(default_factory=list)
    present: set[bytes] = field(default_factory=set)
    deleted: set[bytes] = field(default_factory=set)
    present_phase: bool = False
    cookie: bytes | None = None

    def entry(self, state: SyncState, entry: Any) -> None:
        """A search entry and its Sync State control."""
        if state.state in (ADD, MODIFY):
            self.changed.append((state.uuid, entry))
        elif state.state == PRESENT:
            self.present.add(state.uuid)
            self.present_phase = True
        elif state.state == DELETE:
            self.deleted.add(state.uuid)
        self._cookie(state.cookie)

    def info(self, info: SyncInfo) -> None:
        """A Sync Info intermediate message."""
        if info.kind == "syncIdSet":
            if info.refresh_deletes:
                self.deleted.update(info.uuids)
            else:
                self.present.update(info.uuids)
                self.present_phase = True
        elif info.kind == "refreshPresent":
            self.present_phase = True
        self._cookie(info.cookie)

    def done(self, done: SyncDone) -> None:
        """The Sync Done control of the final result."""
        if not done.refresh_deletes:
            self.present_phase = True
        self._cookie(done.cookie)

    def _cookie(self, cookie: bytes | None) -> None:
        if cookie:
            self.cookie = cookie

    def gone(self, known: Iterable[bytes]) -> set[bytes]:
        """Which of the `known` entries this refresh removes (none of those it sent whole)."""
        sent = {uuid for uuid, _ in self.changed}
        if self.present_phase:
            return {uuid for uuid in known if uuid not in self.present and uuid not in sent} | (
                self.deleted.intersection(known) - sent
            )
        return self.deleted.intersection(known) - sent


def cookies_to_text(cookies: dict[str, bytes | None]) -> str:
    """The cookies of a source's sessions as one text to store (JSON of base64)."""
    return json.dumps(
        {name: base64.b64encode(cookie).decode() for name, cookie in sorted(cookies.items()) if cookie},
        separators=(",", ":"),
    )


def cookies_from_text(text: str | None) -> dict[str, bytes]:
    """The stored cookies back; anything unreadable is no cookie (a full pull follows, as without one)."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
        return {str(name): base64.b64decode(value, validate=True) for name, value in raw.items()}
    except (ValueError, TypeError, AttributeError):
        return {}
