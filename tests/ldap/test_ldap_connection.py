"""Connecting: StartTLS, LDAPS, certificate checks, failover, bind failures, secrets, a server dying mid-pull."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _slapd import SUFFIX, Slapd, free_port, make_ca
from _tree import Tree, big_ldif

from syncd.settings import settings_from_dict
from syncd.sources.ldap import LdapSource, LdapSourceError

pytestmark = pytest.mark.slapd

WRONG_PASSWORD = "Wr0ng-but-Secret-Pa55"


@pytest.fixture
def alice(tree: Tree) -> Tree:
    """A subtree holding one user, alice."""
    tree.add_user("alice")
    return tree


def test_start_tls_with_the_ca_bundle(alice: Tree) -> None:
    snapshot = alice.source().pull()

    assert snapshot.complete and [i.user_id for i in snapshot.identities] == ["alice"]


def test_ldaps_with_the_ca_bundle(alice: Tree) -> None:
    source = alice.source(url=alice.server.tls_url, start_tls=False)

    assert source.check().server == alice.server.tls_url
    assert source.pull().complete


@pytest.mark.parametrize("transport", ["start_tls", "ldaps"])
def test_certificate_from_another_ca_is_refused(alice: Tree, tmp_path: Path, transport: str) -> None:
    other_ca = make_ca(tmp_path, "other-ca")
    url = alice.server.url if transport == "start_tls" else alice.server.tls_url
    source = alice.source(url=url, start_tls=transport == "start_tls", ca_file=str(other_ca))

    with pytest.raises(LdapSourceError, match=r"certificate verify failed|CERTIFICATE_VERIFY_FAILED") as raised:
        source.check()
    snapshot = source.pull()

    assert url in str(raised.value)
    assert not snapshot.complete and snapshot.identities == []
    assert url in snapshot.problems[0]


def test_without_a_ca_bundle_the_throwaway_certificate_is_refused(alice: Tree) -> None:
    source = alice.source(ca_file=None)

    with pytest.raises(LdapSourceError, match="certificate"):
        source.check()


def test_bind_failure_names_the_server_but_not_the_password(alice: Tree) -> None:
    source = alice.source(bind_password=WRONG_PASSWORD)

    with pytest.raises(LdapSourceError) as raised:
        source.check()
    snapshot = source.pull()

    message = str(raised.value)
    assert alice.server.url in message and "invalidCredentials" in message
    assert WRONG_PASSWORD not in message
    assert not snapshot.complete and WRONG_PASSWORD not in " ".join(snapshot.problems)
    assert "invalidCredentials" in snapshot.problems[0]


def test_failover_to_the_next_url(alice: Tree) -> None:
    dead = f"ldap://127.0.0.1:{free_port()}"
    source = alice.source(url=[dead, alice.server.url], connect_timeout_s=2)

    assert source.check().server == alice.server.url
    assert source.pull().complete


def test_every_url_down_names_each(alice: Tree) -> None:
    dead = [f"ldap://127.0.0.1:{free_port()}", f"ldaps://127.0.0.1:{free_port()}"]
    snapshot = alice.source(url=dead, connect_timeout_s=2).pull()

    assert not snapshot.complete
    assert all(url in snapshot.problems[0] for url in dead)


def test_password_from_the_environment_and_from_a_file(alice: Tree, tmp_path: Path) -> None:
    raw: dict[str, Any] = alice.settings().model_dump(mode="json")
    raw["bind_password"] = "${LDAP_BIND_PASSWORD}"
    from_env = settings_from_dict(
        {"ldap": [raw]}, env={"LDAP_BIND_PASSWORD": alice.settings().bind_password.get_secret_value()}
    )  # type: ignore[union-attr]
    secret = tmp_path / "password"
    secret.write_text(alice.settings().bind_password.get_secret_value() + "\n")  # type: ignore[union-attr]
    raw.pop("bind_password")
    from_file = settings_from_dict({"ldap": [{**raw, "bind_password_file": str(secret)}]}, env={})

    assert LdapSource(from_env.ldap[0]).pull().complete
    assert LdapSource(from_file.ldap[0]).pull().complete


@pytest.fixture
def doomed_slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A slapd of its own, with ou=big, that a test may kill."""
    server = Slapd.create(tmp_path / "doomed")
    server.load(big_ldif(600))
    server.start()
    yield server
    server.stop(signal.SIGKILL)


def test_server_stopped_in_the_middle_of_a_pull(doomed_slapd: Slapd, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = Tree(doomed_slapd, None, f"ou=big,{SUFFIX}")  # type: ignore[arg-type]
    source = LdapSource(tree.settings(users={"base_dn": f"ou=big,{SUFFIX}"}, groups=None, page_size=50))
    assert source.pull().complete
    seen = []
    real_user = LdapSource._user

    def user_then_crash(self: LdapSource, state: Any, entry: Any, disabled: set[str]) -> None:
        seen.append(entry["dn"])
        if len(seen) == 120:
            doomed_slapd.stop(signal.SIGKILL)
        real_user(self, state, entry, disabled)

    monkeypatch.setattr(LdapSource, "_user", user_then_crash)

    snapshot = source.pull()

    assert 120 <= len(seen) < 600
    assert not snapshot.complete
    assert snapshot.identities == [] and snapshot.groups == []
    assert snapshot.problems and "corp" in snapshot.problems[0]


def test_lean_entry_decoding_matches_ldap3s_own(alice: Tree) -> None:
    import ldap3

    from syncd.sources import ldap as ldap_source

    alice.add_user("bob", cn="Bøb Ünïcode", title=["a", "b"])
    attributes = ["entryUUID", "uid", "cn", "mail", "title", "modifyTimestamp"]
    plain = ldap3.Connection(ldap3.Server(alice.server.url), auto_bind=True, return_empty_attributes=False)
    lean = alice.source()._bind(alice.server.url)

    for conn in (plain, lean):
        assert conn.search(alice.people, "(objectClass=inetOrgPerson)", attributes=attributes)

    assert [e["dn"] for e in lean.response] == [e["dn"] for e in plain.response]
    assert [ldap_source._raw(e) for e in lean.response] == [ldap_source._raw(e) for e in plain.response]
    bob = next(e for e in lean.response if e["dn"].startswith("uid=bob"))
    assert ldap_source._raw(bob)["title"] == [b"a", b"b"] and ldap_source._raw(bob)["cn"] == ["Bøb Ünïcode".encode()]


def test_a_server_that_stops_answering_times_out(doomed_slapd: Slapd, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = Tree(doomed_slapd, None, f"ou=big,{SUFFIX}")  # type: ignore[arg-type]
    settings = tree.settings(users={"base_dn": f"ou=big,{SUFFIX}"}, groups=None, page_size=50, search_timeout_s=1)
    process = doomed_slapd.process
    assert process is not None
    real_user = LdapSource._user
    seen = []

    def user_then_hang(self: LdapSource, state: Any, entry: Any, disabled: set[str]) -> None:
        seen.append(entry["dn"])
        if len(seen) == 60:
            process.send_signal(signal.SIGSTOP)  # alive, connected, silent
        real_user(self, state, entry, disabled)

    monkeypatch.setattr(LdapSource, "_user", user_then_hang)
    started = time.monotonic()
    try:
        snapshot = LdapSource(settings).pull()
    finally:
        process.send_signal(signal.SIGCONT)

    assert not snapshot.complete and snapshot.identities == []
    assert time.monotonic() - started < 10
    assert len(seen) < 600
