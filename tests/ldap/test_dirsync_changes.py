"""What one DirSync object says: a tombstone, member deltas in the incremental-values form, or other changes."""

from __future__ import annotations

from syncd.sources._dirsync import DirSyncChange, read_change

GUID = bytes(range(16))


def test_a_tombstone_is_a_deletion() -> None:
    raw = {"objectguid": [GUID], "isdeleted": [b"TRUE"], "instancetype": [b"4"]}
    assert read_change(raw, "member") == DirSyncChange(GUID, deleted=True)


def test_member_deltas_alone_are_not_other_changes() -> None:
    raw = {
        "objectguid": [GUID],
        "instancetype": [b"4"],
        "member;range=1-1": [b"CN=new,DC=x"],
        "member;range=0-0": [b"CN=old,DC=x", b"CN=older,DC=x"],
    }
    change = read_change(raw, "member")
    assert change is not None and not change.deleted and not change.other_changes
    assert change.added == (b"CN=new,DC=x",) and change.removed == (b"CN=old,DC=x", b"CN=older,DC=x")


def test_any_other_attribute_means_a_whole_read() -> None:
    raw = {"objectguid": [GUID], "instancetype": [b"4"], "member;range=1-1": [b"CN=a"], "cn": [b"renamed"]}
    change = read_change(raw, "member")
    assert change is not None and change.other_changes and change.added == (b"CN=a",)


def test_an_object_without_a_guid_is_ignored() -> None:
    assert read_change({"objectguid": [b"short"], "cn": [b"x"]}, "member") is None
    assert read_change({"cn": [b"x"]}, "member") is None
