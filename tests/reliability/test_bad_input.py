"""Bad input never crashes syncd: broken configs and import files are refused with exit 2, the key path and no
traceback or secret; odd LDAP entries are skipped or read with warnings; the config loader and the grant parser,
fuzzed with hypothesis, raise nothing but their typed errors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import ldap3
import pytest
import yaml
from _reliability import figures, run_syncd
from _slapd import ADMIN_DN, ADMIN_PASSWORD, SUFFIX, SYNC_DN, SYNC_PASSWORD, Slapd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.cli import main
from syncd.grants import FIELDS, GrantResult, parse_grant, parse_grant_json
from syncd.settings import ConfigError, load_settings, settings_from_dict
from syncd.settings.ldap import LdapSourceSettings
from syncd.sources.ldap import LdapSource

SECRET_KEY = "sk-Secret-Master-d41d8cd98f00"
SECRET_PASSWORD = "Bind-Secret-Pa55-e3b0c442"
_GOOD: dict[str, Any] = {
    "database": {"url": "sqlite:///syncd.db"},
    "litellm": {"url": "http://127.0.0.1:9", "master_key": "${MASTER}"},
    "ldap": [
        {
            "name": "corp",
            "url": "ldap://127.0.0.1:9",
            "bind_dn": "cn=syncd,dc=example,dc=org",
            "bind_password": "${BIND}",
            "users": {"base_dn": "ou=people,dc=example,dc=org"},
        }
    ],
    "mappings": [{"group": "llm-users", "models": ["gpt-4o"], "max_budget": 10, "budget_duration": "monthly"}],
}


def _with(path: str, value: Any) -> str:
    """The good config with one value replaced (path like `mappings[0].role`), as YAML."""
    data = json.loads(json.dumps(_GOOD))
    node: Any = data
    parts = path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return yaml.safe_dump(data)


BROKEN_CONFIGS = [
    ("yaml syntax", "database: [unclosed\nlitellm: {master_key: ${MASTER}}\n", "not valid YAML"),
    ("secret in a yaml error", f'litellm:\n  master_key: "{SECRET_KEY}\n  url: x\n', "not valid YAML"),
    ("tab indentation", "database:\n\turl: sqlite:///x.db\n", "not valid YAML"),
    ("a list at the top", "- database\n- litellm\n", "<top>: the config must be a mapping"),
    ("a scalar at the top", "just words\n", "<top>: the config must be a mapping"),
    ("unknown key", _with("litellm.urll", "http://x"), "litellm.urll: unknown key"),
    ("unknown section", _with("ldpa", []), "ldpa: unknown key"),
    ("bad role", _with("mappings[0].role", "superuser"), "mappings[0].role: 'superuser' is not one of"),
    ("bad duration", _with("mappings[0].budget_duration", "fortnightly"), "mappings[0].budget_duration"),
    ("negative budget", _with("mappings[0].max_budget", -5), "mappings[0].max_budget"),
    ("budget as text", _with("mappings[0].max_budget", "lots"), "mappings[0].max_budget"),
    ("models not a list", _with("mappings[0].models", {"a": 1}), "mappings[0].models"),
    ("mapping without group", _with("mappings[0]", {"role": "internal_user"}), "mappings[0].group: is required"),
    ("mappings not a list", _with("mappings", "llm-users"), "mappings"),
    ("concurrency zero", _with("litellm.concurrency", 0), "litellm.concurrency"),
    ("timeout as text", _with("litellm.timeout_s", "soon"), "litellm.timeout_s"),
    ("database engine", _with("database.url", "mysql://root@db/x"), "database.url"),
    ("ldap url scheme", _with("ldap[0].url", "http://dir.example.org"), "ldap[0].url"),
    ("ldap page size", _with("ldap[0].page_size", -1), "ldap[0].page_size"),
    ("ldap name", _with("ldap[0].name", "no spaces allowed"), "ldap[0].name"),
    ("ldap schedule", _with("ldap[0].schedule", {"full": "every tuesday"}), "ldap[0].schedule.full"),
    ("ldap without users", _with("ldap[0].users", None), "ldap[0].users"),
    ("ratio as text", _with("policy.max_deactivation_ratio", "lots"), "policy.max_deactivation_ratio"),
    ("policy value", _with("policy.deactivation", "vanish"), "policy.deactivation: 'vanish' is not one of"),
    ("unset variable", _with("litellm.master_key", "${NOT_SET_ANYWHERE}"), "NOT_SET_ANYWHERE is not set"),
    ("secret as a list", _with("litellm.master_key", [SECRET_KEY]), "litellm.master_key"),
    ("password as a mapping", _with("ldap[0].bind_password", {"v": SECRET_PASSWORD}), "ldap[0].bind_password"),
    ("secret beside a bad value", _with("litellm.timeout_s", f"{SECRET_KEY}"), "litellm.timeout_s"),
]


@pytest.mark.parametrize(("case", "text", "expected"), BROKEN_CONFIGS, ids=[c[0] for c in BROKEN_CONFIGS])
def test_a_broken_config_is_exit_2_with_the_key_path_and_no_secret(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    text: str,
    expected: str,
) -> None:
    """In process (fast; an exception would fail the test); the same as a process below for a few cases."""
    (tmp_path / "syncd.yaml").write_text(text)
    monkeypatch.setenv("MASTER", SECRET_KEY)
    monkeypatch.setenv("BIND", SECRET_PASSWORD)
    for command in ("check-config", "sync", "plan"):
        status = main([command, "--config", str(tmp_path / "syncd.yaml")])
        out, err = capsys.readouterr()
        assert status == 2, (case, command, out[-1000:], err[-1000:])
        assert expected in err, (case, err)
        assert SECRET_KEY not in out + err and SECRET_PASSWORD not in out + err


@pytest.mark.parametrize("case", ["secret in a yaml error", "secret as a list", "bad role"])
def test_a_broken_config_run_as_a_process_prints_no_traceback_and_no_secret(tmp_path: Path, case: str) -> None:
    _, text, expected = next(c for c in BROKEN_CONFIGS if c[0] == case)
    (tmp_path / "syncd.yaml").write_text(text)
    for command in ("check-config", "sync"):
        done = run_syncd(tmp_path, command, env={"MASTER": SECRET_KEY, "BIND": SECRET_PASSWORD}, timeout_s=30)
        printed = done.stdout + done.stderr
        assert done.returncode == 2 and expected in done.stderr, (case, command, printed[-2000:])
        assert "Traceback" not in printed
        assert SECRET_KEY not in printed and SECRET_PASSWORD not in printed


def test_a_config_that_is_not_utf8_is_refused_cleanly(tmp_path: Path) -> None:
    (tmp_path / "syncd.yaml").write_bytes(b"database:\n  url: \xff\xfe sqlite\n")
    done = run_syncd(tmp_path, "check-config", timeout_s=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_a_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    done = run_syncd(tmp_path, "sync", timeout_s=30)
    assert done.returncode == 2 and "cannot read the file" in done.stderr and "Traceback" not in done.stderr


# -- import files ------------------------------------------------------------------------------------------------
BROKEN_IMPORTS = [
    ("people.json", b'{"users": [', "not valid JSON"),
    ("people.json", b"[1, 2, 3]", "the top level must be an object"),
    ("people.json", b'{"users": [{"user_id": "a"}]}', "email '' is missing"),
    ("people.json", b'{"users": ["alice"]}', "users[0]: must be an object"),
    ("people.json", b'{"users": [{"user_id": "a", "email": "a@x"}, {"user_id": "a", "email": "b@x"}]}', "twice"),
    ("people.json", b'{"users": [], "groups": [{"members": ["x"]}]}', "must be an object with a name"),
    ("people.json", b'{"users": [{"user_id": "a", "email": "a@x", "active": "sometimes"}]}', "is not true or false"),
    ("people.csv", b"name,mail\nA,a@x\n", "the header lacks column(s): email, user_id"),
    ("people.csv", b"user_id,email\n,nobody@x\nb,\n", "user_id is missing"),
    ("people.txt", b"user_id,email\n", "must end in .json or .csv"),
    ("missing.json", None, "cannot read the file"),
]


@pytest.fixture
def import_folder(tmp_path: Path) -> Path:
    config = {"database": {"url": f"sqlite:///{tmp_path}/syncd.db"}, "litellm": {"master_key": SECRET_KEY}}
    (tmp_path / "syncd.yaml").write_text(yaml.safe_dump(config))
    assert run_syncd(tmp_path, "db", "upgrade").returncode == 0
    return tmp_path


@pytest.mark.parametrize(("name", "content", "expected"), BROKEN_IMPORTS, ids=[f"{i}" for i in range(11)])
def test_a_broken_import_file_is_refused_whole(import_folder: Path, name: str, content: Any, expected: str) -> None:
    if content is not None:
        (import_folder / name).write_bytes(content)
    done = run_syncd(import_folder, "import", str(import_folder / name), timeout_s=30)
    assert done.returncode == 2, done.stderr[-2000:]
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert SECRET_KEY not in done.stdout + done.stderr


WRONG_SHAPES = [
    ("users as a number", b'{"users": 5}'),
    ("members as a number", b'{"users": [{"user_id": "a", "email": "a@x"}], "groups": [{"name": "g", "members": 7}]}'),
    ("not utf-8", b'{"users": [{"user_id": "\xff", "email": "a@x"}]}'),
]


@pytest.mark.parametrize(("case", "content"), WRONG_SHAPES, ids=[c[0] for c in WRONG_SHAPES])
def test_an_import_file_of_the_wrong_shape_is_refused_cleanly(import_folder: Path, case: str, content: bytes) -> None:
    (import_folder / "people.json").write_bytes(content)
    done = run_syncd(import_folder, "import", str(import_folder / "people.json"), timeout_s=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-800:]


# -- odd LDAP entries --------------------------------------------------------------------------------------------
def _odd_entries(conn: ldap3.Connection, base: str) -> dict[str, str]:
    """Entries with odd attributes under `base`; returns what each one is."""
    odd = {
        "uid=nomail": ({"uid": "nomail", "cn": "No Mail", "sn": "x"}, "no mail: read without one"),
        "uid=twomails": (
            {"uid": "twomails", "cn": "Two", "sn": "x", "mail": ["two-a@example.org", "two-b@example.org"]},
            "two mails: the first one is used",
        ),
        "uid=twouids": (
            {"uid": ["twouids", "second-uid"], "cn": "Two Uids", "sn": "x", "mail": "twouids@example.org"},
            "two uids: the one in the DN",
        ),
        "uid=jörg": ({"uid": "jörg", "cn": "Jörg Müller", "sn": "Müller", "mail": "joerg@example.org"}, "unicode DN"),
        "uid=日本": ({"uid": "日本", "cn": "日本", "sn": "日本", "mail": "nihon@example.org"}, "CJK DN"),
        "cn=Smith\\, John+uid=smith": (
            {"uid": "smith", "cn": "Smith, John", "sn": "Smith", "mail": "smith@example.org"},
            "escaped comma, multi-valued RDN",
        ),
        "uid=photo": (
            {"uid": "photo", "cn": "Photo", "sn": "x", "mail": "photo@example.org", "jpegPhoto": bytes(range(256))},
            "binary attribute",
        ),
        "uid=  spaced": ({"uid": "  spaced", "cn": " ", "sn": "x", "mail": "spaced@example.org"}, "blank name"),
        "uid=badmail": ({"uid": "badmail", "cn": "Bad", "sn": "x", "mail": "not-an-address"}, "mail not an address"),
    }
    for rdn, (attrs, _) in odd.items():
        assert conn.add(f"{rdn},{base}", ["inetOrgPerson"], attrs), (rdn, conn.result)
    return {rdn: what for rdn, (_, what) in odd.items()}


@pytest.fixture(scope="module")
def odd_tree(slapd: Slapd) -> str:
    conn = ldap3.Connection(ldap3.Server(slapd.url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
    base = f"ou=odd,{SUFFIX}"
    assert conn.add(base, ["organizationalUnit"], {"ou": "odd"}), conn.result
    _odd_entries(conn, base)
    group = f"cn=odd-group,{base}"
    members = [f"uid=jörg,{base}", f"cn=Smith\\, John+uid=smith,{base}", f"uid=nomail,{base}", f"uid=gone,{base}"]
    assert conn.add(group, ["groupOfNames"], {"cn": "odd-group", "member": members}), conn.result
    conn.unbind()
    return base


def _source(slapd: Slapd, base: str, **users: Any) -> LdapSource:
    raw = {
        "name": "odd",
        "url": slapd.url,
        "bind_dn": SYNC_DN,
        "bind_password": SYNC_PASSWORD,
        "users": {"base_dn": base, **users},
        "groups": {"base_dn": base, "filter": "(objectClass=groupOfNames)"},
    }
    return LdapSource(LdapSourceSettings.model_validate(raw))


def test_odd_ldap_entries_are_read_or_skipped_never_a_crash(
    slapd: Slapd, odd_tree: str, caplog: pytest.LogCaptureFixture
) -> None:
    snapshot = _source(slapd, odd_tree).pull()
    assert snapshot.complete, snapshot.problems
    by_uid = {i.user_id: i for i in snapshot.identities}
    assert by_uid["nomail"].email == "" and snapshot.counters["no_email"] == 1
    strict = _source(slapd, odd_tree, require_email=True).pull()
    assert "nomail" not in {i.user_id for i in strict.identities} and strict.counters["skipped_no_email"] == 1
    assert any("nomail" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    assert by_uid["twomails"].email in ("two-a@example.org", "two-b@example.org")
    assert by_uid["jörg"].dn == f"uid=jörg,{odd_tree}" and by_uid["日本"].email == "nihon@example.org"
    assert by_uid["smith"].display_name == "Smith, John"
    (group,) = snapshot.groups
    members = {i.user_id for i in snapshot.identities if i.external_id in group.members}
    assert members == {"jörg", "smith", "nomail"}  # the dangling DN tolerated
    figures("odd-ldap", entries=10, read=len(by_uid), skipped=strict.counters.get("skipped_no_email", 0))


def test_a_binary_attribute_as_the_name_does_not_crash_the_pull(
    slapd: Slapd, odd_tree: str, caplog: pytest.LogCaptureFixture
) -> None:
    snapshot = _source(slapd, odd_tree, name_attribute="jpegPhoto").pull()
    assert snapshot.complete, snapshot.problems
    # the photo holds NUL bytes, which PostgreSQL cannot store: that entry is skipped and named (issue 13), the
    # others (without a photo: no name) are read
    by_uid = {i.user_id: i for i in snapshot.identities}
    assert "photo" not in by_uid and "jörg" in by_uid and snapshot.counters["skipped_unstorable"] == 1
    assert any("uid=photo" in r.getMessage() and "jpegPhoto contains a NUL" in r.getMessage() for r in caplog.records)


def test_a_binary_attribute_as_the_user_id_does_not_crash_the_pull(slapd: Slapd, odd_tree: str) -> None:
    snapshot = _source(slapd, odd_tree, user_id_attribute="jpegPhoto").pull()
    assert snapshot.complete or snapshot.problems  # either way: a snapshot, not an exception
    assert all(isinstance(i.user_id, str) for i in snapshot.identities)


# -- fuzzing -------------------------------------------------------------------------------------------------------
_KEYS = st.sampled_from(
    [
        "database",
        "url",
        "litellm",
        "master_key",
        "timeout_s",
        "concurrency",
        "ldap",
        "name",
        "users",
        "base_dn",
        "groups",
        "mappings",
        "group",
        "role",
        "models",
        "max_budget",
        "budget_duration",
        "policy",
        "deactivation",
        "max_deactivation_ratio",
        "scim",
        "tokens",
        "token",
        "server",
        "port",
        "teams",
        "schedule",
        "full",
        "incremental",
        "defaults",
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["${X}", "${X:-}", "${", "monthly", "1mo", "30d", "0 */6 * * *", "ldap://h", "sqlite:///x"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_KEYS | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_fuzzed_config_documents_raise_only_config_error(raw: dict[str, Any]) -> None:
    try:
        settings_from_dict(raw, env={"X": "value"})
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzzed_config_text_raises_only_config_error(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "syncd.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_settings(path, env={})
    except ConfigError as exc:
        assert exc.problems


_GRANT_VALUES = st.lists(
    st.text(max_size=20) | st.sampled_from(["proxy_admin", "1e999", "inf", "-1", "NaN", "monthly", "true", "a,b"]),
    max_size=3,
)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["r", "m", "t", "b", "d", "k", "x"]), _GRANT_VALUES, max_size=7),
    st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(["r", "m", "t", "b", "d", "k"]), max_size=6),
)
def test_fuzzed_grant_attributes_never_raise(attributes: dict[str, list[str]], mapping: dict[str, str]) -> None:
    result = parse_grant("cn=g", attributes, mapping)
    assert isinstance(result, GrantResult)
    assert not (result.grant and result.warnings)
    assert set(result.grant) <= set(FIELDS)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), _JSON, max_size=6) | _JSON, st.booleans())
def test_fuzzed_grant_json_never_raises(data: Any, prefixed: bool) -> None:
    text = json.dumps(data)
    result = parse_grant_json("cn=g", "description", [("litellm:" if prefixed else "") + text, "other text"])
    assert isinstance(result, GrantResult) and set(result.grant) <= set(FIELDS)


@pytest.mark.parametrize("value", ["inf", "1e999"])
def test_an_infinite_budget_grant_is_refused(value: str) -> None:
    result = parse_grant("cn=g", {"b": [value]}, {"max_budget": "b"})
    assert not result.grant or math.isfinite(result.grant["max_budget"])


def test_an_infinite_budget_in_the_config_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"mappings\[0\]\.max_budget"):
        settings_from_dict({"mappings": [{"group": "g", "max_budget": math.inf}]})
