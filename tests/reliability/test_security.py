"""Security: LDAP filter metacharacters in directory values and high-water marks, secrets kept out of everything a
process prints (wrong master key, a LiteLLM that echoes the key, a wrong bind password, a database password), and
TLS verification on by default for LDAP and LiteLLM.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
import uvicorn
import yaml
from _reliability import MASTER, figures, run_syncd, wait_for
from _slapd import ADMIN_DN, ADMIN_PASSWORD, SUFFIX, SYNC_DN, SYNC_PASSWORD, Slapd
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from syncd.settings.ldap import LdapSourceSettings
from syncd.sources.ldap import LdapSource
from syncd.testing import listening_socket, serve_in_thread
from syncd.testing.fake_litellm import create_fake_litellm

WRONG_KEY = "sk-Wrong-Key-9b2f7e61aa"
WRONG_PASSWORD = "Wrong-Bind-Pw-5c0d9e"
DB_PASSWORD = "Db-Secret-Pw-71f3"
PEOPLE = {
    "source": "hr",
    "users": [{"user_id": f"u{i}", "email": f"u{i}@example.com"} for i in range(3)],
    "groups": [{"name": "llm-users", "members": ["u0", "u1", "u2"]}],
}


# -- LDAP filter injection ----------------------------------------------------------------------------------------
HOSTILE_UIDS = ["*", "x)(uid=*", "admin*", "a\\2a", "(|(objectClass=*))", "\\00nul"]


@pytest.fixture(scope="module")
def hostile_tree(slapd: Slapd) -> str:
    """People whose uid and cn are LDAP filter syntax, and a posixGroup whose memberUid values are too."""
    conn = ldap3.Connection(ldap3.Server(slapd.url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
    base = f"ou=hostile,{SUFFIX}"
    assert conn.add(base, ["organizationalUnit"], {"ou": "hostile"}), conn.result
    for i, uid in enumerate(HOSTILE_UIDS):
        attrs = {"uid": uid, "cn": f"{uid})(cn=*", "sn": "x", "mail": f"h{i}@example.org"}
        assert conn.add(f"cn=h{i},{base}", ["inetOrgPerson"], attrs), (uid, conn.result)
    for name in ("alice", "bob"):
        assert conn.add(f"cn={name},{base}", ["inetOrgPerson"], {"uid": name, "sn": "x", "mail": f"{name}@x.org"})
    group = {"cn": "llm-admins", "gidNumber": 5000, "memberUid": ["*", "x)(uid=*"]}
    assert conn.add(f"cn=llm-admins,{base}", ["posixGroup"], group), conn.result
    conn.unbind()
    return base


def _uid_source(slapd: Slapd, base: str) -> LdapSource:
    raw = {
        "name": "hostile",
        "url": slapd.url,
        "content_sync": "off",  # these tests are about the modifyTimestamp high-water mark, not RFC 4533 cookies
        "bind_dn": SYNC_DN,
        "bind_password": SYNC_PASSWORD,
        "users": {"base_dn": base},
        "groups": {"base_dn": base, "filter": "(objectClass=posixGroup)", "member_attribute": "memberUid"},
    }
    return LdapSource(LdapSourceSettings.model_validate(raw))


def test_filter_syntax_in_member_uids_matches_only_the_literal_user(slapd: Slapd, hostile_tree: str) -> None:
    snapshot = _uid_source(slapd, hostile_tree).pull()
    assert snapshot.complete, snapshot.problems
    assert {i.user_id for i in snapshot.identities} == {*HOSTILE_UIDS, "alice", "bob"}
    (admins,) = snapshot.groups
    members = {i.user_id for i in snapshot.identities if i.external_id in admins.members}
    assert members == {"*", "x)(uid=*"}, "a memberUid of '*' must not make everyone an admin"


@pytest.mark.parametrize(
    "mark", ["ts:20200101000000Z)(uid=*", "ts:*", "usn:abc:1)(|(objectClass=*)", "ts:20200101000000Z\x00"]
)
def test_a_tampered_high_water_mark_never_reaches_a_filter(slapd: Slapd, hostile_tree: str, mark: str) -> None:
    source = _uid_source(slapd, hostile_tree)
    assert source.pull().complete
    snapshot = source.pull(since=mark)  # not the mark this process's index is current to: a full pull
    assert snapshot.complete and not snapshot.incremental
    assert snapshot.counters.get("incremental_fallback") == 1 and len(snapshot.identities) == len(HOSTILE_UIDS) + 2


def test_an_incremental_pull_with_hostile_values_stays_exact(slapd: Slapd, hostile_tree: str) -> None:
    source = _uid_source(slapd, hostile_tree)
    full = source.pull()
    assert full.complete and full.high_water_mark
    # two people whose uid is filter syntax change their email after the full pull: the incremental pull brings them
    # with the new emails, and whoever else it re-reads within the overlap exactly as they are
    moved = {"*": "star@moved.example.org", "x)(uid=*": "paren@moved.example.org"}
    conn = ldap3.Connection(ldap3.Server(slapd.url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
    for i, uid in enumerate(HOSTILE_UIDS[:2]):
        assert conn.modify(f"cn=h{i},{hostile_tree}", {"mail": [(ldap3.MODIFY_REPLACE, [moved[uid]])]}), conn.result
    conn.unbind()
    again = source.pull(since=full.high_water_mark)
    assert again.complete and again.incremental
    before = {i.user_id: i for i in full.identities}
    got = {i.user_id: i for i in again.identities}
    assert set(moved) <= set(got) <= set(before), sorted(got)
    assert {uid: got[uid].email for uid in moved} == moved
    assert all(got[uid] == before[uid] for uid in set(got) - set(moved))


# -- secrets in output ---------------------------------------------------------------------------------------------
class SecretCli:
    """A config folder with people imported, the fake LiteLLM, and everything the processes printed."""

    def __init__(self, folder: Path, litellm_url: str) -> None:
        self.folder = folder
        self.config: dict[str, Any] = {
            "database": {"url": f"sqlite:///{folder}/syncd.db"},
            "litellm": {"url": litellm_url, "master_key": "${LITELLM_MASTER_KEY}", "max_retries": 1},
            "mappings": [{"group": "llm-users", "models": ["gpt-4o"]}],
        }
        self.printed: list[str] = []
        self.write()
        assert self.run("db", "upgrade").returncode == 0
        (folder / "people.json").write_text(json.dumps(PEOPLE))
        assert self.run("import", str(folder / "people.json")).returncode == 0

    def write(self, **sections: Any) -> None:
        (self.folder / "syncd.yaml").write_text(yaml.safe_dump({**self.config, **sections}))

    def run(self, *args: str, key: str = MASTER, level: str = "DEBUG") -> subprocess.CompletedProcess[str]:
        env = {"LITELLM_MASTER_KEY": key, "LDAP_BIND_PASSWORD": WRONG_PASSWORD, "SYNCD_LOG_LEVEL": level}
        done = run_syncd(self.folder, *args, env=env, timeout_s=60)
        self.printed.append(done.stdout + done.stderr)
        return done


@pytest.fixture
def secret_cli(tmp_path: Path) -> Iterator[SecretCli]:
    app = create_fake_litellm(MASTER)
    with serve_in_thread(app) as url:
        yield SecretCli(tmp_path, url)


def _assert_absent(printed: list[str], *secrets: str) -> None:
    text = "\n".join(printed)
    for secret in secrets:
        assert secret not in text, f"{secret} printed"


def test_a_wrong_master_key_is_never_printed(secret_cli: SecretCli) -> None:
    for command in ("sync", "check-config", "plan"):
        done = secret_cli.run(command, "--json" if command != "check-config" else "--log-level=DEBUG", key=WRONG_KEY)
        assert done.returncode in (1, 2), done.stderr[-2000:]
    done = secret_cli.run("sync", key=WRONG_KEY)
    assert done.returncode == 1 and "401" in done.stderr
    _assert_absent(secret_cli.printed, WRONG_KEY, MASTER)
    figures(
        "secrets", case="wrong master key", commands=len(secret_cli.printed), bytes=sum(map(len, secret_cli.printed))
    )


def _echoing_litellm() -> Starlette:
    """A LiteLLM-like server that echoes the presented key in its 401 and 500 bodies (some proxies do)."""

    async def echo(request: Request) -> JSONResponse:
        key = request.headers.get("authorization", "")
        status = 401 if request.url.path.startswith("/user/list") else 500
        return JSONResponse({"error": {"message": f"bad key {key} for {request.url.path}"}}, status_code=status)

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])


def test_a_litellm_that_echoes_the_key_does_not_make_syncd_print_it(secret_cli: SecretCli) -> None:
    with serve_in_thread(_echoing_litellm()) as url:
        secret_cli.write(litellm={**secret_cli.config["litellm"], "url": url})
        for command in ("sync", "check-config", "plan"):
            done = secret_cli.run(command)
            assert done.returncode in (1, 2), done.stdout + done.stderr
    assert "bad key" in "\n".join(secret_cli.printed)  # the echo reached syncd and was scrubbed
    _assert_absent(secret_cli.printed, MASTER)


def test_a_wrong_bind_password_is_never_printed(secret_cli: SecretCli, slapd: Slapd) -> None:
    ldap = {
        "name": "corp",
        "url": slapd.url,
        "bind_dn": SYNC_DN,
        "bind_password": "${LDAP_BIND_PASSWORD}",
        "users": {"base_dn": f"ou=people,{SUFFIX}"},
    }
    secret_cli.write(ldap=[ldap])
    assert secret_cli.run("sync").returncode == 1
    assert secret_cli.run("check-config").returncode == 2
    assert secret_cli.run("plan", "--json").returncode == 1  # the plan is printed; the failed pull makes it exit 1
    assert "invalidCredentials" in "\n".join(secret_cli.printed)
    _assert_absent(secret_cli.printed, WRONG_PASSWORD, MASTER)


def test_a_database_password_is_never_printed(secret_cli: SecretCli) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    secret_cli.write(database={"url": f"postgresql+psycopg://syncd:{DB_PASSWORD}@127.0.0.1:{port}/syncd"})
    for command in ("sync", "check-config", "plan", "db"):
        done = secret_cli.run(*((command, "upgrade") if command == "db" else (command,)))
        assert done.returncode != 0
        assert "Traceback" not in done.stderr, (command, done.stderr[-2000:])
        assert f'"127.0.0.1", port {port} failed: Connection refused' in done.stdout + done.stderr, command
    _assert_absent(secret_cli.printed, DB_PASSWORD, MASTER)


# -- TLS verification on by default --------------------------------------------------------------------------------
def _self_signed(folder: Path) -> tuple[Path, Path]:
    key, cert = folder / "litellm.key", folder / "litellm.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def https_litellm(tmp_path: Path) -> Iterator[tuple[str, Path, Any]]:
    """The fake LiteLLM over https with a throwaway self-signed certificate; yields (url, cert, fake)."""
    cert, key = _self_signed(tmp_path)
    app = create_fake_litellm(MASTER)
    sock = listening_socket("127.0.0.1")
    config = uvicorn.Config(app, log_level="warning", ssl_certfile=str(cert), ssl_keyfile=str(key))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 10, "the https server")
        assert server.started
        yield f"https://127.0.0.1:{sock.getsockname()[1]}", cert, app.state.fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_litellm_with_a_self_signed_certificate_is_refused_by_default(
    secret_cli: SecretCli, https_litellm: tuple[str, Path, Any]
) -> None:
    url, cert, fake = https_litellm
    secret_cli.write(litellm={**secret_cli.config["litellm"], "url": url})
    refused = secret_cli.run("sync")
    assert refused.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr[-2000:]
    assert fake.calls == [] and fake.users == {}
    checked = secret_cli.run("check-config")
    assert checked.returncode == 2 and "FAIL  litellm" in checked.stdout
    secret_cli.write(litellm={**secret_cli.config["litellm"], "url": url, "ca_file": str(cert)})
    trusted = secret_cli.run("sync")
    assert trusted.returncode == 0 and set(fake.users) == {"u0", "u1", "u2"}, trusted.stderr[-2000:]


@pytest.mark.parametrize("transport", ["ldaps", "start_tls"])
def test_ldap_with_an_untrusted_certificate_is_refused_by_default(
    secret_cli: SecretCli, slapd: Slapd, hostile_tree: str, transport: str
) -> None:
    ldap = {
        "name": "corp",
        "url": slapd.tls_url if transport == "ldaps" else slapd.url,
        "start_tls": transport == "start_tls",
        "bind_dn": SYNC_DN,
        "bind_password": SYNC_PASSWORD,
        "users": {"base_dn": hostile_tree},
    }
    secret_cli.write(ldap=[ldap])
    refused = secret_cli.run("sync")
    assert refused.returncode == 1 and "certificate verify failed" in refused.stderr.lower(), refused.stderr[-2000:]
    assert secret_cli.run("check-config").returncode == 2
    secret_cli.write(ldap=[{**ldap, "ca_file": str(slapd.ca)}])
    trusted = secret_cli.run("sync")
    assert trusted.returncode == 0, trusted.stderr[-2000:]
