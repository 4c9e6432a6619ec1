"""Directory faults against a real slapd, through `syncd sync` run as a process: the server killed mid-pull, the
connection cut or hung mid-pull (a byte-counting TCP proxy between syncd and slapd), a bind refused, a size limit, an
empty or missing base, an unreachable server, groups suddenly gone. Every time: exit 1, nobody suspended, nothing
written to LiteLLM, the store's record of the directory unchanged, and the failure recorded for the source.
"""

from __future__ import annotations

import random
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _reliability import DIRECTORY_PEOPLE, MASTER, FaultyProxy, figures, run_syncd
from _slapd import LIMITED_DN, SUFFIX, SYNC_DN, SYNC_PASSWORD, Slapd
from sqlalchemy import delete

from syncd.store import make_engine
from syncd.store.repository import SyncStore
from syncd.store.tables import source_index
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import create_fake_litellm

pytestmark = pytest.mark.slapd


class Directory:
    """A recorded LDAP source (through the proxy), the fake LiteLLM and the CLI's config, shared by the module."""

    def __init__(self, folder: Path, slapd: Slapd, litellm_url: str, fake: Any) -> None:
        self.folder, self.slapd, self.fake = folder, slapd, fake
        self.proxy = FaultyProxy(slapd.port)
        self.ldap: dict[str, Any] = {
            "name": "corp",
            "url": f"ldap://127.0.0.1:{self.proxy.port}",
            "bind_dn": SYNC_DN,
            "bind_password": "${LDAP_BIND_PASSWORD}",
            "page_size": 100,
            "connect_timeout_s": 2,
            "search_timeout_s": 2,
            "users": {"base_dn": f"ou=people,{SUFFIX}"},
            "groups": {"base_dn": f"ou=groups,{SUFFIX}", "filter": "(objectClass=groupOfNames)"},
        }
        self.config: dict[str, Any] = {
            "database": {"url": f"sqlite:///{folder}/syncd.db"},
            "litellm": {"url": litellm_url, "master_key": "${LITELLM_MASTER_KEY}", "concurrency": 8},
            "mappings": [{"group": "llm-users", "models": ["gpt-4o"]}],
            "policy": {"unmapped_users": "deactivate", "max_deactivations": 100_000, "max_deactivation_ratio": 1.0},
        }
        self.store = SyncStore(make_engine(self.config["database"]["url"]))
        self.full_pull_bytes = 0

    def write(self, **ldap: Any) -> None:
        config = {**self.config, "ldap": [{**self.ldap, **ldap}]}
        (self.folder / "syncd.yaml").write_text(yaml.safe_dump(config))

    def run(self, *args: str) -> Any:
        return run_syncd(self.folder, *args, env={"LITELLM_MASTER_KEY": MASTER, "LDAP_BIND_PASSWORD": SYNC_PASSWORD})

    def sync(self, **ldap: Any) -> Any:
        """`syncd sync` reading the whole directory: the stored content sync index is removed first (a new process
        would otherwise continue from it and read only what changed), since the faults are placed within a full
        pull's bytes."""
        with self.store.engine.begin() as conn:
            conn.execute(delete(source_index))
        self.write(**ldap)
        return self.run("sync")


@pytest.fixture(scope="module")
def directory(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    app = create_fake_litellm(MASTER)
    with serve_in_thread(app) as url:
        folder = tmp_path_factory.mktemp("directory")
        d = Directory(folder, slapd, url, app.state.fake)
        d.write()
        assert d.run("db", "upgrade").returncode == 0
        d.proxy.arm("pass")
        first = d.sync()
        assert first.returncode == 0, first.stderr[-3000:]
        d.full_pull_bytes = d.proxy.down_bytes
        assert len(app.state.fake.users) == DIRECTORY_PEOPLE
        yield d
        d.proxy.close()
        d.store.engine.dispose()


def _assert_nothing_lost(d: Directory, done: Any, before: dict[str, Any]) -> None:
    assert done.returncode == 1, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr
    assert d.fake.write_calls() == 0, "LiteLLM was changed after a failed pull"
    assert not any(u["metadata"].get("scim_active") is False for u in d.fake.users.values())
    assert d.store.dump_source("corp") == before, "the store's record of the directory changed"
    assert d.store.source_state("corp").last_error
    assert "pull failed" in done.stdout


@pytest.fixture
def before(directory: Directory) -> Iterator[dict[str, Any]]:
    """The store's record before a fault; afterwards the server runs, the proxy passes and a sync is clean again."""
    directory.fake.reset_calls()
    directory.proxy.arm("pass")
    yield directory.store.dump_source("corp")
    directory.proxy.arm("pass")
    if directory.slapd.process is None or directory.slapd.process.poll() is not None:
        directory.slapd.start()
    again = directory.sync()
    assert again.returncode == 0 and "Plan: no changes" in again.stdout, again.stdout[-2000:]


def _offset(d: Directory, seed: int) -> int:
    return random.Random(seed).randint(d.full_pull_bytes // 10, d.full_pull_bytes * 9 // 10)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_slapd_killed_mid_pull(directory: Directory, before: dict[str, Any], seed: int) -> None:
    at = _offset(directory, seed)
    directory.proxy.arm("call", at, lambda: directory.slapd.stop(signal.SIGKILL))
    done = directory.sync()
    assert directory.proxy.fired.is_set()
    _assert_nothing_lost(directory, done, before)
    figures("directory", fault="slapd SIGKILL mid-pull", at_byte=at, of_bytes=directory.full_pull_bytes)


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_connection_cut_mid_pull(directory: Directory, before: dict[str, Any], seed: int) -> None:
    at = _offset(directory, seed)
    directory.proxy.arm("cut", at)
    done = directory.sync()
    assert directory.proxy.fired.is_set()
    _assert_nothing_lost(directory, done, before)
    figures("directory", fault="connection cut mid-pull", at_byte=at, of_bytes=directory.full_pull_bytes)


def test_server_hanging_mid_pull_times_out(directory: Directory, before: dict[str, Any]) -> None:
    directory.proxy.arm("stall", _offset(directory, 21))
    started = time.monotonic()
    done = directory.sync()
    took = time.monotonic() - started
    _assert_nothing_lost(directory, done, before)
    assert took < 30
    figures("directory", fault="server silent mid-pull", search_timeout_s=2, seconds=round(took, 1))


def test_bind_refused(directory: Directory, before: dict[str, Any]) -> None:
    done = directory.sync(bind_password="Wr0ng-Bind-Pa55word")
    _assert_nothing_lost(directory, done, before)
    assert "invalidCredentials" in done.stderr and "Wr0ng-Bind-Pa55word" not in done.stdout + done.stderr


def test_size_limit_hit(directory: Directory, before: dict[str, Any]) -> None:
    done = directory.sync(bind_dn=LIMITED_DN)
    _assert_nothing_lost(directory, done, before)
    assert "size limit" in done.stderr


def test_empty_user_result(directory: Directory, before: dict[str, Any]) -> None:
    done = directory.sync(users={"base_dn": f"ou=empty,{SUFFIX}"})
    _assert_nothing_lost(directory, done, before)


def test_filter_matching_nobody(directory: Directory, before: dict[str, Any]) -> None:
    done = directory.sync(users={"base_dn": f"ou=people,{SUFFIX}", "filter": "(uid=nobody-at-all)"})
    _assert_nothing_lost(directory, done, before)


def test_missing_base_dn(directory: Directory, before: dict[str, Any]) -> None:
    done = directory.sync(users={"base_dn": f"ou=nowhere,{SUFFIX}"})
    _assert_nothing_lost(directory, done, before)
    assert "no such object" in done.stderr


def test_server_unreachable(directory: Directory, before: dict[str, Any]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = directory.sync(url=f"ldap://127.0.0.1:{port}")
    _assert_nothing_lost(directory, done, before)


def test_groups_suddenly_gone(directory: Directory, before: dict[str, Any]) -> None:
    """Every group vanishing at once (a wrong base, a broken ACL) must not strip everyone of their access."""
    done = directory.sync(groups={"base_dn": f"ou=empty,{SUFFIX}", "filter": "(objectClass=groupOfNames)"})
    _assert_nothing_lost(directory, done, before)
