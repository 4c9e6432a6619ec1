"""RFC 4533 (LDAP Content Synchronization) messages: the Sync Request control, and the Sync State, Sync Done and
Sync Info messages a server answers with.

A purely computational module with no I/O and no ldap3 import. The request is built with pyasn1 (its ASN.1 types
below are the RFC's); the answers are read with a small BER reader of their own, because a server answers a
refresh with one Sync State control per changed entry and up to one 16-byte UUID per entry in `syncIdSet`
messages, and decoding 100,000 of those through pyasn1 costs seconds where slicing bytes costs milliseconds. The
tests check the reader against pyasn1's encoder for every message kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyasn1.codec.ber import encoder
from pyasn1.type import namedtype, namedval, tag, univ

__all__ = [
    "ADD",
    "DELETE",
    "MODIFY",
    "PRESENT",
    "REFRESH_REQUIRED",
    "SYNC_DONE_OID",
    "SYNC_INFO_OID",
    "SYNC_REQUEST_OID",
    "SYNC_STATE_OID",
    "SyncDone",
    "SyncDoneValue",
    "SyncInfo",
    "SyncInfoValue",
    "SyncMessageError",
    "SyncState",
    "SyncStateValue",
    "parse_sync_done",
    "parse_sync_info",
    "parse_sync_state",
    "sync_request_value",
]

SYNC_REQUEST_OID = "1.3.6.1.4.1.4203.1.9.1.1"
SYNC_STATE_OID = "1.3.6.1.4.1.4203.1.9.1.2"
SYNC_DONE_OID = "1.3.6.1.4.1.4203.1.9.1.3"
SYNC_INFO_OID = "1.3.6.1.4.1.4203.1.9.1.4"
#: the result code of `e-syncRefreshRequired`: the server no longer accepts the cookie
REFRESH_REQUIRED = 4096

#: Sync State values (RFC 4533 section 2.3)
PRESENT, ADD, MODIFY, DELETE = 0, 1, 2, 3


class SyncMessageError(ValueError):
    """A Sync State, Done or Info value that is not what RFC 4533 describes."""


class _SyncRequestValue(univ.Sequence):
    """syncRequestValue ::= SEQUENCE { mode ENUMERATED, cookie OPTIONAL, reloadHint BOOLEAN DEFAULT FALSE }"""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType(
            "mode", univ.Enumerated(namedValues=namedval.NamedValues(("refreshOnly", 1), ("refreshAndPersist", 3)))
        ),
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
        namedtype.DefaultedNamedType("reloadHint", univ.Boolean(False)),
    )


def sync_request_value(cookie: bytes | None) -> bytes:
    """The BER value of a refreshOnly Sync Request control, with the cookie of the previous sync if there is one."""
    value = _SyncRequestValue()
    value["mode"] = 1
    if cookie:
        value["cookie"] = cookie
    return bytes(encoder.encode(value))


@dataclass(frozen=True, slots=True)
class SyncState:
    """The Sync State control of one search entry: present, add, modify or delete, and the entry's UUID."""

    state: int
    uuid: bytes
    cookie: bytes | None = None


@dataclass(frozen=True, slots=True)
class SyncDone:
    """The Sync Done control of the final result: the new cookie; refresh_deletes False means a present phase ended
    the refresh (every entry not named as present or changed is gone)."""

    cookie: bytes | None
    refresh_deletes: bool


@dataclass(frozen=True, slots=True)
class SyncInfo:
    """A Sync Info intermediate message: a new cookie, the end of a phase, or a `syncIdSet` of UUIDs.

    kind: "newcookie", "refreshDelete", "refreshPresent" or "syncIdSet". For syncIdSet, `refresh_deletes` True
    means the UUIDs are deleted entries, False that they are present ones.
    """

    kind: str
    cookie: bytes | None = None
    refresh_done: bool = True
    refresh_deletes: bool = False
    uuids: tuple[bytes, ...] = ()


# -- a minimal BER reader (definite lengths only, as LDAP requires) ----------------------------------------------


def _tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag byte, start of the value, end of the value) of the element at `at`."""
    if at + 2 > len(data):
        raise SyncMessageError("truncated element")
    tag_byte, length, at = data[at], data[at + 1], at + 2
    if tag_byte & 0x1F == 0x1F:
        raise SyncMessageError("multi-byte tags are not used by RFC 4533")
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or at + count > len(data):
            raise SyncMessageError("bad length")
        length, at = int.from_bytes(data[at : at + count], "big"), at + count
    if at + length > len(data):
        raise SyncMessageError("truncated element")
    return tag_byte, at, at + length


def _elements(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The elements directly inside data[start:end]."""
    found = []
    while start < end:
        element = _tlv(data, start)
        if element[2] > end:
            raise SyncMessageError("an element overruns its container")
        found.append(element)
        start = element[2]
    return found


def _sequence(data: bytes, expected_tag: int) -> list[tuple[int, int, int]]:
    tag_byte, start, end = _tlv(data, 0)
    if tag_byte != expected_tag or end != len(data):
        raise SyncMessageError(f"expected tag 0x{expected_tag:02x}, found 0x{tag_byte:02x}")
    return _elements(data, start, end)


def _boolean(data: bytes, start: int, end: int) -> bool:
    if end - start != 1:
        raise SyncMessageError("bad BOOLEAN")
    return data[start] != 0


def parse_sync_state(value: bytes) -> SyncState:
    """Read a Sync State control value: SEQUENCE { state ENUMERATED, entryUUID OCTET STRING, cookie OPTIONAL }."""
    parts = _sequence(value, 0x30)
    if len(parts) not in (2, 3) or parts[0][0] != 0x0A or parts[1][0] != 0x04:
        raise SyncMessageError("a Sync State value is SEQUENCE { state, entryUUID, cookie OPTIONAL }")
    state = int.from_bytes(value[parts[0][1] : parts[0][2]], "big")
    uuid = value[parts[1][1] : parts[1][2]]
    if state not in (PRESENT, ADD, MODIFY, DELETE) or len(uuid) != 16:
        raise SyncMessageError(f"Sync State {state} with a {len(uuid)}-byte UUID")
    cookie = value[parts[2][1] : parts[2][2]] if len(parts) == 3 else None
    return SyncState(state, uuid, cookie)


def parse_sync_done(value: bytes | None) -> SyncDone:
    """Read a Sync Done control value: SEQUENCE { cookie OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE }."""
    if not value:
        return SyncDone(None, False)
    cookie, deletes = _cookie_and_flag(value, _sequence(value, 0x30), default=False)
    return SyncDone(cookie, deletes)


def _cookie_and_flag(data: bytes, parts: list[tuple[int, int, int]], *, default: bool) -> tuple[bytes | None, bool]:
    cookie, flag = None, default
    for tag_byte, start, end in parts:
        if tag_byte == 0x04 and cookie is None:
            cookie = data[start:end]
        elif tag_byte == 0x01:
            flag = _boolean(data, start, end)
        else:
            raise SyncMessageError(f"unexpected element 0x{tag_byte:02x}")
    return cookie, flag


def parse_sync_info(value: bytes) -> SyncInfo:
    """Read a Sync Info value: newcookie [0], refreshDelete [1], refreshPresent [2] or syncIdSet [3]."""
    tag_byte, start, end = _tlv(value, 0)
    if end != len(value):
        raise SyncMessageError("trailing bytes after the Sync Info value")
    if tag_byte == 0x80:
        return SyncInfo("newcookie", cookie=value[start:end])
    if tag_byte in (0xA1, 0xA2):
        cookie, done = _cookie_and_flag(value, _elements(value, start, end), default=True)
        return SyncInfo("refreshDelete" if tag_byte == 0xA1 else "refreshPresent", cookie=cookie, refresh_done=done)
    if tag_byte == 0xA3:
        return _sync_id_set(value, _elements(value, start, end))
    raise SyncMessageError(f"unknown Sync Info choice 0x{tag_byte:02x}")


def _sync_id_set(value: bytes, parts: list[tuple[int, int, int]]) -> SyncInfo:
    if not parts or parts[-1][0] != 0x31:
        raise SyncMessageError("a syncIdSet ends with its SET OF UUIDs")
    cookie, deletes = _cookie_and_flag(value, parts[:-1], default=False)
    _, start, end = parts[-1]
    uuids = _uuid_set(value, start, end)
    return SyncInfo("syncIdSet", cookie=cookie, refresh_deletes=deletes, uuids=uuids)


def _uuid_set(value: bytes, start: int, end: int) -> tuple[bytes, ...]:
    """The 16-byte UUIDs of a SET OF OCTET STRING; each is `04 10` and 16 bytes, so the common case is a slice."""
    length = end - start
    if (
        length % 18 == 0
        and value[start:end:18] == b"\x04" * (length // 18)
        and (value[start + 1 : end : 18] == b"\x10" * (length // 18))
    ):
        return tuple(value[i + 2 : i + 18] for i in range(start, end, 18))
    uuids = []
    for tag_byte, item_start, item_end in _elements(value, start, end):
        if tag_byte != 0x04 or item_end - item_start != 16:
            raise SyncMessageError("a syncUUID is a 16-byte OCTET STRING")
        uuids.append(value[item_start:item_end])
    return tuple(uuids)


#: pyasn1 types of the answers, used by the tests to encode what a server sends (and kept beside the reader as its
#: specification)
class SyncStateValue(univ.Sequence):
    """syncStateValue ::= SEQUENCE { state ENUMERATED, entryUUID syncUUID, cookie syncCookie OPTIONAL }"""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("state", univ.Enumerated()),
        namedtype.NamedType("entryUUID", univ.OctetString()),
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
    )


class SyncDoneValue(univ.Sequence):
    """syncDoneValue ::= SEQUENCE { cookie syncCookie OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE }"""

    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
        namedtype.DefaultedNamedType("refreshDeletes", univ.Boolean(False)),
    )


class _Phase(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
        namedtype.DefaultedNamedType("refreshDone", univ.Boolean(True)),
    )


class _IdSet(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", univ.OctetString()),
        namedtype.DefaultedNamedType("refreshDeletes", univ.Boolean(False)),
        namedtype.NamedType("syncUUIDs", univ.SetOf(componentType=univ.OctetString())),
    )


def _context(number: int, *, constructed: bool) -> tag.Tag:
    return tag.Tag(tag.tagClassContext, tag.tagFormatConstructed if constructed else tag.tagFormatSimple, number)


class SyncInfoValue(univ.Choice):
    """syncInfoValue ::= CHOICE { newcookie [0], refreshDelete [1], refreshPresent [2], syncIdSet [3] }"""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("newcookie", univ.OctetString().subtype(implicitTag=_context(0, constructed=False))),
        namedtype.NamedType("refreshDelete", _Phase().subtype(implicitTag=_context(1, constructed=True))),
        namedtype.NamedType("refreshPresent", _Phase().subtype(implicitTag=_context(2, constructed=True))),
        namedtype.NamedType("syncIdSet", _IdSet().subtype(implicitTag=_context(3, constructed=True))),
    )
