"""Pure helpers of the LDAP source: DN normalisation, member values, `member;range=` assembly, group expansion.

Purely computational functions with no side effects and no ldap3 import, so they are tested without a server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DirectoryIndex",
    "ExpansionCounters",
    "GroupRecord",
    "IndexChanges",
    "assemble_range",
    "direct_within",
    "expand_group",
    "member_key",
    "normalise_dn",
    "range_end",
]

_SPECIAL = set(',+"\\<>;=')
_UNIQUE_MEMBER_UID = re.compile(r"#'[01]*'B$")
_RANGE = re.compile(r";range=(\d+)-(\d+|\*)$", re.IGNORECASE)


def normalise_dn(dn: str) -> str:
    """A DN in one canonical form (lower case, no spaces around separators, canonical escapes) for comparison."""
    text = dn.strip().lower()
    if "\\" in text or '"' in text or "+" in text:
        return _normalise_escaped(text)
    if " " not in text:
        return text
    return ",".join(_strip_ava(rdn) for rdn in text.split(","))


def _strip_ava(rdn: str) -> str:
    name, _, value = rdn.partition("=")
    return f"{name.strip()}={value.strip()}"


def _normalise_escaped(text: str) -> str:
    rdns = [sorted(f"{name.strip()}={_escape(value.strip())}" for name, value in rdn) for rdn in _parse_dn(text)]
    return ",".join("+".join(avas) for avas in rdns)


def _parse_dn(text: str) -> list[list[tuple[str, str]]]:
    """Split a DN into RDNs of (type, unescaped value), honouring backslash escapes, hex pairs and quotes."""
    rdns: list[list[tuple[str, str]]] = [[]]
    name, value, in_value, quoted, i = "", bytearray(), False, False, 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            pair = text[i + 1 : i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdef" for c in pair):
                value.append(int(pair, 16))
                i += 3
                continue
            value += text[i + 1].encode()
            i += 2
            continue
        if char == '"':
            quoted = not quoted
        elif not in_value and char == "=":
            in_value = True
        elif not in_value:
            name += char
        elif not quoted and char in ",;+":
            rdns[-1].append((name, value.decode("utf-8", "replace")))
            name, value, in_value = "", bytearray(), False
            if char != "+":
                rdns.append([])
        else:
            value += char.encode()
        i += 1
    rdns[-1].append((name, value.decode("utf-8", "replace")))
    return rdns


def _escape(value: str) -> str:
    escaped = "".join(f"\\{c}" if c in _SPECIAL else c for c in value)
    return "\\" + escaped if escaped.startswith("#") else escaped


def member_key(value: str, *, by_uid: bool) -> str:
    """What a group's member value is compared by: the normalised DN, or the lower-case uid for memberUid."""
    if by_uid:
        return value.strip().lower()
    return normalise_dn(_UNIQUE_MEMBER_UID.sub("", value))


def range_end(attribute: str) -> int | None:
    """The last index of a `member;range=START-END` attribute name, None when it is the last range (`*`)."""
    match = _RANGE.search(attribute)
    if match is None or match.group(2) == "*":
        return None
    return int(match.group(2))


def assemble_range(
    first_attribute: str, first_values: list[bytes], fetch: Callable[[int], tuple[str, list[bytes]]]
) -> list[bytes]:
    """Every value of an attribute Active Directory returned in ranges; `fetch(start)` reads `attr;range=start-*`."""
    values = list(first_values)
    attribute = first_attribute
    for _ in range(100_000):
        end = range_end(attribute)
        if end is None:
            return values
        attribute, more = fetch(end + 1)
        if not more and range_end(attribute) is not None:
            raise ValueError(f"the server returned an empty range after index {end}")
        values.extend(more)
    raise ValueError("too many ranges")


@dataclass(slots=True)
class GroupRecord:
    """One group as last read: its ids and the keys of its direct members."""

    external_id: str
    name: str
    dn: str
    dn_key: str
    member_keys: frozenset[str]
    grant: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class IndexChanges:
    """What changed in a DirectoryIndex while it tracked changes: the users put or dropped, each group put or
    dropped with its record before the first change (None: it was new), and the member keys and group DN keys whose
    owner (user_by_key, group_by_dn) may have changed."""

    users: set[str] = field(default_factory=set)
    groups: dict[str, GroupRecord | None] = field(default_factory=dict)
    user_keys: set[str] = field(default_factory=set)
    dn_keys: set[str] = field(default_factory=set)


@dataclass(slots=True)
class DirectoryIndex:
    """What a pull learned about the directory, kept so an incremental pull can resolve unchanged members.

    users: external id -> (member key, emitted); user_by_key: member key -> external id; groups by external id,
    group_by_dn: normalised DN -> group external id. `mark` is the high-water mark the index is current to.
    """

    users: dict[str, tuple[str, bool]] = field(default_factory=dict)
    user_by_key: dict[str, str] = field(default_factory=dict)
    groups: dict[str, GroupRecord] = field(default_factory=dict)
    group_by_dn: dict[str, str] = field(default_factory=dict)
    mark: str | None = None
    #: the users recorded but not emitted (no mail under require_email): never a group's member
    silent: set[str] = field(default_factory=set)
    #: when set, every change is noted there (what a content sync stores of one pull)
    changes: IndexChanges | None = None

    def put_user(self, external_id: str, key: str, emitted: bool) -> tuple[str, bool] | None:
        """Record a user; returns what was recorded before (None when new)."""
        before = self.users.get(external_id)
        if before is not None and self.user_by_key.get(before[0]) == external_id:
            del self.user_by_key[before[0]]
        if self.changes is not None:
            self.changes.users.add(external_id)
            self.changes.user_keys.update((key, before[0]) if before else (key,))
        if emitted:
            self.silent.discard(external_id)
        else:
            self.silent.add(external_id)
        self.users[external_id] = (key, emitted)
        self.user_by_key[key] = external_id
        return before

    def put_group(self, record: GroupRecord) -> GroupRecord | None:
        """Record a group; returns the previous record (None when new)."""
        before = self.groups.get(record.external_id)
        if before is not None and self.group_by_dn.get(before.dn_key) == record.external_id:
            del self.group_by_dn[before.dn_key]
        if self.changes is not None:
            self.changes.groups.setdefault(record.external_id, before)
            self.changes.dn_keys.update((record.dn_key, before.dn_key) if before else (record.dn_key,))
        self.groups[record.external_id] = record
        self.group_by_dn[record.dn_key] = record.external_id
        return before

    def drop_user(self, external_id: str) -> tuple[str, bool] | None:
        """Forget a user the directory no longer has; returns what was recorded (None when unknown)."""
        before = self.users.pop(external_id, None)
        self.silent.discard(external_id)
        if before is not None and self.user_by_key.get(before[0]) == external_id:
            del self.user_by_key[before[0]]
        if self.changes is not None and before is not None:
            self.changes.users.add(external_id)
            self.changes.user_keys.add(before[0])
        return before

    def drop_group(self, external_id: str) -> GroupRecord | None:
        """Forget a group the directory no longer has; returns its record (None when unknown)."""
        before = self.groups.pop(external_id, None)
        if before is not None and self.group_by_dn.get(before.dn_key) == external_id:
            del self.group_by_dn[before.dn_key]
        if self.changes is not None and before is not None:
            self.changes.groups.setdefault(external_id, before)
            self.changes.dn_keys.add(before.dn_key)
        return before

    def direct_members(self, record: GroupRecord) -> tuple[frozenset[str], list[str], int]:
        """(user external ids, child group ids, dangling count) of one group's direct member keys.

        A key is a user's first, else a group's, else dangling. The keys are matched with set operations (in C),
        not one by one: a 50,000-member group costs a few milliseconds.
        """
        keys, by_key = record.member_keys, self.user_by_key
        found = keys & by_key.keys()
        users = frozenset([by_key[key] for key in found])
        if self.silent and not users.isdisjoint(self.silent):
            users -= self.silent
        rest = keys - found if len(found) < len(keys) else frozenset()
        # member_keys is a set, whose order changes with each process's hash seed: sorted, the expansion (and the
        # child recorded as `via` for a member reachable through several) is the same in every run
        children = sorted(self.group_by_dn[key] for key in rest if key in self.group_by_dn)
        return users, children, len(rest) - len(children)

    def parents_of(self, external_ids: Iterable[str]) -> set[str]:
        """Every group that contains, directly or through nesting, one of these groups."""
        found: set[str] = set()
        frontier = {self.groups[g].dn_key for g in external_ids if g in self.groups}
        while frontier:
            new = {g for g, rec in self.groups.items() if g not in found and not rec.member_keys.isdisjoint(frontier)}
            found |= new
            frontier = {self.groups[g].dn_key for g in new}
        return found


@dataclass(slots=True)
class ExpansionCounters:
    """What expansion met: member DNs that resolve to nothing, groups that contain themselves, depth cut-offs."""

    dangling_members: int = 0
    group_cycles: int = 0
    depth_limit_reached: int = 0


def expand_group(
    index: DirectoryIndex,
    external_id: str,
    *,
    nested: bool,
    max_depth: int,
    direct: dict[str, tuple[frozenset[str], list[str], int]],
    counters: ExpansionCounters,
    via: dict[str, str] | None = None,
    resolve: Callable[[GroupRecord], tuple[frozenset[str], list[str], int]] | None = None,
) -> frozenset[str]:
    """The external ids of a group's members, nested groups expanded breadth-first (cycle-safe, depth-limited).

    `direct` memoises `index.direct_members` (or `resolve`, which may restrict the users) across the groups of one
    pull. `via`, when given, receives for each member reached through nesting the direct child group it came
    through (the first found at the shallowest depth, children taken in external id order, so the same in every
    run), so a nesting path can be told: the child's own `via` continues it.
    """
    members: set[str] = set()
    own: frozenset[str] = frozenset()
    seen = {external_id}
    level: list[tuple[str, str | None]] = [(external_id, None)]
    cycle = False
    for depth in range(max_depth + 1):
        following: list[tuple[str, str | None]] = []
        for group, top in level:
            users, children, dangling = _direct(index, group, direct, resolve)
            if via is not None and top is not None:
                for user in users - own:
                    via.setdefault(user, top)
            members |= users
            if depth == 0:
                own = users
                counters.dangling_members += dangling
            if not nested:
                continue
            cycle = cycle or external_id in children
            following += [(child, top or child) for child in children if child not in seen]
            seen.update(children)
        if not following:
            break
        level = following
    else:
        counters.depth_limit_reached += 1
    counters.group_cycles += cycle
    return own if len(members) == len(own) else frozenset(members)  # share the set when nesting added nobody


def _direct(
    index: DirectoryIndex,
    group: str,
    direct: dict[str, tuple[frozenset[str], list[str], int]],
    resolve: Callable[[GroupRecord], tuple[frozenset[str], list[str], int]] | None,
) -> tuple[frozenset[str], list[str], int]:
    found = direct.get(group)
    if found is None:
        found = direct[group] = (resolve or index.direct_members)(index.groups[group])
    return found


def direct_within(
    index: DirectoryIndex, record: GroupRecord, users_by_key: Mapping[str, str]
) -> tuple[frozenset[str], list[str], int]:
    """As `index.direct_members`, but only the users of `users_by_key` (member key -> external id, users emitted)
    and no dangling count: a cost of the smaller side, not of the group's whole member list."""
    keys, user_keys, by_dn = record.member_keys, index.user_by_key, index.group_by_dn
    if len(keys) <= len(users_by_key):
        users = frozenset(users_by_key[key] for key in keys if key in users_by_key)
    else:
        users = frozenset(user for key, user in users_by_key.items() if key in keys)
    if len(keys) <= len(by_dn):
        children = [by_dn[key] for key in keys if key in by_dn and key not in user_keys]
    else:
        children = [group for key, group in by_dn.items() if key in keys and key not in user_keys]
    children.sort()
    return users, children, 0
