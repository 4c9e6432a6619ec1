"""The one check of what the store can hold of a directory entry (issue 13): the same on SQLite and PostgreSQL."""

from __future__ import annotations

from syncd.sources._storable import GROUP_LIMITS, USER_LIMITS, unstorable
from syncd.store.tables import groups, identities


def test_the_limits_are_the_store_column_sizes() -> None:
    for name, limit in USER_LIMITS.items():
        assert identities.c[name].type.length == limit, name
    for name, limit in GROUP_LIMITS.items():
        assert groups.c[name].type.length == limit, name


def test_values_the_store_cannot_hold_are_named_with_their_attribute() -> None:
    def check(value: bytes, name: str = "user_id") -> str | None:
        return unstorable([(name, "uid", value)], USER_LIMITS)

    assert check(b"jdoe") is None and check("jörg".encode()) is None
    assert check(b"a" * 255) is None
    assert check(b"a" * 256) == "uid has 256 characters, more than the store holds (255)"
    assert check("é".encode() * 255) is None  # characters, not bytes
    assert check(b"j\x00doe") == "uid contains a NUL character"
    assert check(b"j\xffdoe") == "uid is not valid UTF-8"
    # a display name is only shown: bytes that are not UTF-8 are replaced there, a NUL or its length still count
    assert check(b"\xff\xfe", "display_name") is None
    assert check(b"x" * 501, "display_name") == "uid has 501 characters, more than the store holds (500)"
    assert unstorable([("dn", "the DN", b"uid=a\x00,dc=x")], USER_LIMITS) == "the DN contains a NUL character"
    assert unstorable([("email", "mail", None)], USER_LIMITS) is None
