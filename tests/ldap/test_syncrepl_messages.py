"""RFC 4533 messages: the request built with pyasn1 decodes as the RFC says; the fast reader of the answers agrees
with pyasn1's encoder for every kind of message, and refuses malformed values with SyncMessageError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder

from syncd.sources._syncrepl import (
    ADD,
    DELETE,
    PRESENT,
    SyncDone,
    SyncDoneValue,
    SyncInfo,
    SyncInfoValue,
    SyncMessageError,
    SyncState,
    SyncStateValue,
    _SyncRequestValue,
    parse_sync_done,
    parse_sync_info,
    parse_sync_state,
    sync_request_value,
)

UUID_A, UUID_B = bytes(range(16)), bytes(range(16, 32))
uuids = st.binary(min_size=16, max_size=16)
cookies = st.none() | st.binary(min_size=1, max_size=80)


def test_the_request_is_refresh_only_with_the_cookie() -> None:
    decoded, rest = decoder.decode(sync_request_value(b"rid=000,csn=20261207"), asn1Spec=_SyncRequestValue())
    assert rest == b""
    assert int(decoded["mode"]) == 1 and bytes(decoded["cookie"]) == b"rid=000,csn=20261207"
    assert not bool(decoded["reloadHint"])


def test_a_request_without_a_cookie_leaves_it_out() -> None:
    assert sync_request_value(None) == b"\x30\x03\x0a\x01\x01"
    assert sync_request_value(b"") == b"\x30\x03\x0a\x01\x01"


def _state(state: int, uuid: bytes, cookie: bytes | None) -> bytes:
    value = SyncStateValue()
    value["state"], value["entryUUID"] = state, uuid
    if cookie is not None:
        value["cookie"] = cookie
    return bytes(encoder.encode(value))


@given(state=st.sampled_from([0, 1, 2, 3]), uuid=uuids, cookie=cookies)
@settings(max_examples=60, deadline=None)
def test_sync_state_reads_what_pyasn1_writes(state: int, uuid: bytes, cookie: bytes | None) -> None:
    assert parse_sync_state(_state(state, uuid, cookie)) == SyncState(state, uuid, cookie)


def test_sync_state_refuses_a_short_uuid_and_an_unknown_state() -> None:
    with pytest.raises(SyncMessageError):
        parse_sync_state(_state(ADD, b"short", None))
    with pytest.raises(SyncMessageError):
        parse_sync_state(_state(7, UUID_A, None))
    with pytest.raises(SyncMessageError):
        parse_sync_state(_state(ADD, UUID_A, None)[:-3])  # truncated


def _done(cookie: bytes | None, deletes: bool | None) -> bytes:
    value = SyncDoneValue()
    if cookie is not None:
        value["cookie"] = cookie
    if deletes is not None:
        value["refreshDeletes"] = deletes
    return bytes(encoder.encode(value))


@given(cookie=cookies, deletes=st.none() | st.booleans())
@settings(max_examples=40, deadline=None)
def test_sync_done_reads_what_pyasn1_writes(cookie: bytes | None, deletes: bool | None) -> None:
    assert parse_sync_done(_done(cookie, deletes)) == SyncDone(cookie, bool(deletes))


def test_a_sync_done_without_a_value_is_a_present_phase_without_cookie() -> None:
    assert parse_sync_done(None) == SyncDone(None, False)


def _info(choice: str, **fields: object) -> bytes:
    value = SyncInfoValue()
    if choice == "newcookie":
        value["newcookie"] = fields["cookie"]
    else:
        part = value.getComponentByName(choice)
        for name, field_value in fields.items():
            if name == "syncUUIDs":
                for i, uuid in enumerate(field_value):  # type: ignore[arg-type]
                    part["syncUUIDs"].setComponentByPosition(i, uuid)
            else:
                part[name] = field_value
        if choice == "syncIdSet" and "syncUUIDs" not in fields:
            part["syncUUIDs"].clear()
    return bytes(encoder.encode(value))


def test_sync_info_new_cookie() -> None:
    assert parse_sync_info(_info("newcookie", cookie=b"c1")) == SyncInfo("newcookie", cookie=b"c1")


@pytest.mark.parametrize("choice", ["refreshDelete", "refreshPresent"])
def test_sync_info_end_of_a_phase(choice: str) -> None:
    assert parse_sync_info(_info(choice, cookie=b"c2", refreshDone=False)) == SyncInfo(
        choice, cookie=b"c2", refresh_done=False
    )
    assert parse_sync_info(_info(choice)) == SyncInfo(choice, cookie=None, refresh_done=True)


@given(cookie=cookies, deletes=st.booleans(), members=st.lists(uuids, max_size=40, unique=True))
@settings(max_examples=60, deadline=None)
def test_sync_id_set_reads_what_pyasn1_writes(cookie: bytes | None, deletes: bool, members: list[bytes]) -> None:
    fields: dict[str, object] = {"refreshDeletes": deletes, "syncUUIDs": members}
    if cookie is not None:
        fields["cookie"] = cookie
    info = parse_sync_info(_info("syncIdSet", **fields))
    assert info.kind == "syncIdSet" and info.cookie == cookie and info.refresh_deletes is deletes
    assert sorted(info.uuids) == sorted(members)  # DER may sort a SET OF; BER keeps the order


def test_a_large_sync_id_set_with_long_form_lengths() -> None:
    many = [i.to_bytes(16, "big") for i in range(5000)]
    info = parse_sync_info(_info("syncIdSet", refreshDeletes=True, syncUUIDs=many))
    assert info.refresh_deletes and len(info.uuids) == 5000 and set(info.uuids) == set(many)


def test_a_sync_id_set_with_a_bad_uuid_is_refused() -> None:
    good = _info("syncIdSet", syncUUIDs=[UUID_A, UUID_B])
    bad = _info("syncIdSet", syncUUIDs=[UUID_A, b"x" * 15])
    assert parse_sync_info(good).uuids == (UUID_A, UUID_B)
    with pytest.raises(SyncMessageError):
        parse_sync_info(bad)


@pytest.mark.parametrize(
    "value",
    [b"", b"\x84\x01x", b"\x80\x05ab", b"\xa3\x00", b"\x80\x01a\x00", b"\xa1\x03\x02\x01\x01", b"\x80\x85\x01"],
)
def test_malformed_sync_info_is_refused(value: bytes) -> None:
    with pytest.raises(SyncMessageError):
        parse_sync_info(value)


def test_state_constants_are_the_rfcs() -> None:
    assert (PRESENT, ADD, DELETE) == (0, 1, 3)


# -- what a refresh means for the entries known (syncd.sources._content) -----------------------------------------

KNOWN = {bytes([n]) * 16 for n in range(1, 6)}
ONE, TWO, THREE = (bytes([n]) * 16 for n in range(1, 4))


def test_a_delete_phase_removes_only_what_it_names() -> None:
    from syncd.sources._content import Refresh

    refresh = Refresh()
    refresh.info(SyncInfo("syncIdSet", refresh_deletes=True, uuids=(ONE, b"\x09" * 16)))  # one unknown: ignored
    refresh.entry(SyncState(ADD, TWO), {"dn": "uid=two"})
    refresh.done(SyncDone(b"c", True))
    assert refresh.gone(KNOWN) == {ONE} and refresh.cookie == b"c"


def test_a_present_phase_removes_what_it_neither_names_nor_sends() -> None:
    from syncd.sources._content import Refresh

    refresh = Refresh()
    refresh.info(SyncInfo("syncIdSet", refresh_deletes=False, uuids=(ONE,)))
    refresh.entry(SyncState(PRESENT, THREE), {"dn": "uid=three"})
    refresh.entry(SyncState(ADD, TWO), {"dn": "uid=two"})
    refresh.done(SyncDone(None, False))
    assert refresh.gone(KNOWN) == KNOWN - {ONE, TWO, THREE} and refresh.cookie is None


def test_a_present_phase_then_a_delete_phase() -> None:
    from syncd.sources._content import Refresh

    refresh = Refresh()
    refresh.info(SyncInfo("syncIdSet", uuids=(ONE, TWO, THREE)))
    refresh.info(SyncInfo("refreshPresent", refresh_done=False))
    refresh.entry(SyncState(DELETE, THREE), {"dn": "uid=three"})
    refresh.done(SyncDone(b"c2", True))
    assert refresh.gone(KNOWN) == KNOWN - {ONE, TWO}


def test_stored_cookies_round_trip_and_garbage_is_no_cookie() -> None:
    from syncd.sources._content import cookies_from_text, cookies_to_text

    text = cookies_to_text({"users": b"rid=000,csn=1", "groups": None})
    assert cookies_from_text(text) == {"users": b"rid=000,csn=1"}
    assert cookies_from_text("not json") == {} and cookies_from_text(None) == {} and cookies_from_text("[1]") == {}
