"""The users this process last read or wrote: the base of an optimistic PATCH or PUT, saving its read.

On PostgreSQL a user write is one statement applied only if the row is still at the version it was computed
from (`ScimSession.update_user_at`). So the state it is computed from need not be read in the same request: the
version this process last saw will do, and if the row has moved on since (another replica, a deletion, an import)
the statement writes nothing and the service reads the row and computes the write again. An entry is never
answered as is: reads (GET, lists) always go to the database, and a PATCH that would change nothing from an entry
is decided on the row read from the database, not on the entry.

Entries are kept as compact JSON (a few hundred bytes for a typical user), the least recently used dropped first.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import replace

from syncd.store.scim import UserRecord

__all__ = ["RecentUsers"]


class RecentUsers:
    """A bounded, thread-safe map (source, SCIM id) -> the user as last read or written (its groups left out)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str], tuple[UserRecord, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, source: str, id: str) -> UserRecord | None:
        """The user `id` of `source` as last seen, or None; a fresh copy each time (callers may change it)."""
        with self._lock:
            entry = self._entries.get((source, id))
            if entry is None:
                return None
            self._entries.move_to_end((source, id))
        record, resource = entry
        return replace(record, resource=json.loads(resource))

    def put(self, source: str, record: UserRecord) -> None:
        """Remember `record` (committed at its version) as the latest state of its user; an older one is ignored."""
        if self.capacity <= 0:
            return
        entry = (replace(record, resource={}, groups=()), json.dumps(record.resource).encode("utf-8"))
        key = (source, record.id)
        with self._lock:
            known = self._entries.get(key)
            if known is not None and known[0].version > record.version:
                return
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def drop(self, source: str, id: str) -> None:
        """Forget the user `id` of `source` (deleted, or found to have moved on)."""
        with self._lock:
            self._entries.pop((source, id), None)
