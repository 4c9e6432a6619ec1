"""The stored content sync state (syncd/sources/_resume.py), without a server: a base and its deltas rebuild the
index and sessions exactly; anything else is refused."""

from __future__ import annotations

import zlib

import pytest

from syncd.sources._content import SyncSession
from syncd.sources._ldap_graph import DirectoryIndex, GroupRecord, IndexChanges
from syncd.sources._resume import ResumeError, encode_base, encode_delta, restore


def _uuid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def _state() -> tuple[dict[str, SyncSession], DirectoryIndex]:
    index = DirectoryIndex()
    sessions = {"users": SyncSession(b"c1"), "groups": SyncSession(b"c2"), "disabled": SyncSession(None)}
    for n in range(12):
        index.put_user(f"e{n}", f"uid=u{n},ou=people", n != 3)  # e3: no mail under require_email
        sessions["users"].entries[_uuid(n)] = f"e{n}"
    keys = frozenset({"uid=u1,ou=people", "uid=u2,ou=people", "uid=gone,ou=people", "cn=b,ou=groups"})
    index.put_group(GroupRecord("ga", "a", "cn=A,ou=groups", "cn=a,ou=groups", keys, {"role": "proxy_admin"}))
    index.put_group(GroupRecord("gb", "b", "cn=b,ou=groups", "cn=b,ou=groups", frozenset({"uid=u3,ou=people"})))
    sessions["groups"].entries.update({_uuid(100): "ga", _uuid(101): "gb"})
    return sessions, index


def _same(restored_index: DirectoryIndex, index: DirectoryIndex) -> None:
    for name in ("users", "user_by_key", "groups", "group_by_dn", "silent"):
        assert getattr(restored_index, name) == getattr(index, name), name


def test_a_base_and_its_deltas_rebuild_the_index_and_the_sessions() -> None:
    sessions, index = _state()
    base = encode_base(sessions, index, "fp")
    index.changes = IndexChanges()
    for session in sessions.values():
        session.changed.clear()
    index.drop_user("e2")
    sessions["users"].drop(_uuid(2))
    index.put_user("e5", "uid=renamed,ou=people", True)
    index.put_user("e20", "uid=u20,ou=people", False)
    sessions["users"].put(_uuid(20), "e20")
    before = index.groups["ga"]
    index.put_group(
        GroupRecord(
            "ga",
            "a2",
            "cn=A,ou=groups",
            "cn=a,ou=groups",
            before.member_keys - {"uid=u1,ou=people"} | {"uid=u20,ou=people"},
        )
    )
    index.drop_group("gb")
    sessions["groups"].drop(_uuid(101))
    index.put_group(GroupRecord("gc", "c", "cn=c,ou=groups", "cn=c,ou=groups", frozenset({"cn=a,ou=groups"})))
    sessions["users"].cookie = b"c3"
    delta = encode_delta(sessions, index, index.changes)

    restored = restore([base, delta], "fp", {"users": b"c3", "groups": b"c2"})
    _same(restored.index, index)
    assert {name: s.entries for name, s in restored.sessions.items()} == {n: s.entries for n, s in sessions.items()}
    assert {name: s.cookie for name, s in restored.sessions.items()} == {n: s.cookie for n, s in sessions.items()}
    assert restored.deltas == 1 and restored.delta_size == len(delta) and restored.base_size == len(base)


@pytest.mark.parametrize(
    ("bodies", "fingerprint", "cookies", "reason"),
    [
        ([], "fp", {"users": b"c1", "groups": b"c2"}, "no stored index"),
        (None, "other", {"users": b"c1", "groups": b"c2"}, "other settings"),
        (None, "fp", {"users": b"c9", "groups": b"c2"}, "does not go with"),
        ([b"not zlib"], "fp", {}, "unreadable"),
        ([zlib.compress(b'{"v": 1, "kind": "delta"}\n')], "fp", {}, "not a stored index"),
        ([zlib.compress(b'{"v": 1, "kind": "base", "fingerprint": "fp"}\n[1]\n')], "fp", {}, "not a JSON object"),
    ],
)
def test_a_state_that_cannot_be_continued_is_refused(
    bodies: list[bytes] | None, fingerprint: str, cookies: dict[str, bytes], reason: str
) -> None:
    sessions, index = _state()
    base = encode_base(sessions, index, "fp")
    with pytest.raises(ResumeError, match=reason):
        restore([base] if bodies is None else bodies, fingerprint, cookies)
    with pytest.raises(ResumeError, match=r"truncated|unreadable"):
        restore([base[: len(base) // 2]], "fp", {"users": b"c1", "groups": b"c2"})
