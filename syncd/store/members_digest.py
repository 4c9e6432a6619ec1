"""The members digest of a group: a digest of its recorded members that can be updated by difference.

The digest is the sum, modulo 2^256, of a 256-bit BLAKE2b hash of each member's line `external_id TAB via` (via:
the direct child group a nested member came through, empty for a direct member), written as 64 hex digits. A group
that gained or lost a few of its 50,000 members gets its new digest from the old one by adding and subtracting those
few lines' hashes, with no need to read or hash the others.

Why a sum, and why it stays exact in meaning (equal digests <=> equal member sets, with overwhelming probability):
two different member sets differ by a non-empty set of lines, each counted +1 or -1, so their digests are equal only
if a signed sum of independent uniform 256-bit values is 0 mod 2^256: probability 2^-256 per comparison. A sum keeps
multiplicities (a line counted twice by mistake moves the digest), where XOR would cancel it silently, and XOR is
linear: 257 chosen member ids solve any target by Gaussian elimination. Against member ids chosen by an attacker, a
sum modulo 2^256 needs a generalised birthday attack (Wagner's k-tree) over huge numbers of entries whose ids the
attacker controls and places in the group; LDAP sources key members by server-assigned entryUUID/objectGUID. The
daily true full pull recomputes every digest whole, so an error could not outlive a day either way.

Purely computational, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

__all__ = ["EMPTY", "MembersDigest", "line_hash"]

_MODULUS = 1 << 256
#: the digest of a group with no recorded member
EMPTY = "0" * 64


def line_hash(member: str, via: str | None) -> int:
    """The 256-bit hash of one member's line, as an integer."""
    return int.from_bytes(hashlib.blake2b(f"{member}\t{via or ''}".encode(), digest_size=32).digest(), "big")


def _text(total: int) -> str:
    return f"{total % _MODULUS:064x}"


class MembersDigest:
    """Members digests for one recording: the hashes of direct members are kept, since a person is in many groups."""

    def __init__(self) -> None:
        self._direct: dict[str, int] = {}

    def _hash(self, member: str, via: str | None) -> int:
        if via:
            return line_hash(member, via)
        found = self._direct.get(member)
        if found is None:
            found = self._direct[member] = line_hash(member, None)
        return found

    def whole(self, members: Iterable[str], via: Mapping[str, str]) -> str:
        """The digest of these members (each reached through `via.get(member)`)."""
        direct = [member for member in members if not via.get(member)]
        cache = self._direct
        for member in direct:
            if member not in cache:
                cache[member] = line_hash(member, None)
        total = sum(map(cache.__getitem__, direct))
        total += sum(line_hash(member, via[member]) for member in members if via.get(member))
        return _text(total)

    def updated(
        self,
        digest: str,
        added: Iterable[tuple[str, str | None]],
        removed: Iterable[tuple[str, str | None]],
    ) -> str:
        """The digest after the lines `added` (member, via) joined the set and the lines `removed` left it."""
        total = int(digest, 16)
        total += sum(self._hash(member, via) for member, via in added)
        total -= sum(self._hash(member, via) for member, via in removed)
        return _text(total)
