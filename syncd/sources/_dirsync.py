"""What one object of an Active Directory DirSync answer says (1.2.840.113556.1.4.841, also in Samba AD DC).

Purely computational, no I/O. DirSync returns each changed object with only its changed attributes (and always its
objectGUID); a deleted object comes back as a tombstone (`isDeleted: TRUE`, under CN=Deleted Objects). With the
LDAP_DIRSYNC_INCREMENTAL_VALUES flag a linked attribute such as `member` comes as value-level changes:
`member;range=1-1` lists the values added, `member;range=0-0` those removed, so a 50,000-member group with one new
member costs one value, not 50,000.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DirSyncChange", "read_change"]

#: attributes every DirSync object carries, changed or not
_ALWAYS = {"objectguid", "instancetype"}


@dataclass(frozen=True, slots=True)
class DirSyncChange:
    """One object of a DirSync answer: its GUID, whether it is a tombstone, the member values added and removed
    (incremental form), and whether anything else changed (then the object is read again whole)."""

    guid: bytes
    deleted: bool
    added: tuple[bytes, ...] = ()
    removed: tuple[bytes, ...] = ()
    other_changes: bool = True


def read_change(raw: dict[str, list[bytes]], member_attribute: str) -> DirSyncChange | None:
    """The change one DirSync object (raw values, lower-case names) describes; None without a 16-byte objectGUID."""
    guid = (raw.get("objectguid") or [b""])[0]
    if len(guid) != 16:
        return None
    if any(value.upper() == b"TRUE" for value in raw.get("isdeleted") or []):
        return DirSyncChange(guid, deleted=True)
    member = member_attribute.lower()
    added = tuple(raw.get(f"{member};range=1-1") or ())
    removed = tuple(raw.get(f"{member};range=0-0") or ())
    deltas = {f"{member};range=1-1", f"{member};range=0-0"}
    other = any(values and name not in _ALWAYS and name not in deltas for name, values in raw.items())
    return DirSyncChange(guid, deleted=False, added=added, removed=removed, other_changes=other)
