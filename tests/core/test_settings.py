"""Loading the config: environment substitution, secrets from files, and errors that name the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.durations import budget_duration_for_litellm, parse_interval
from syncd.settings import ConfigError, load_settings, settings_from_dict

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "syncd.example.yaml"


def problems(data: object, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(data, env=env)
    return caught.value.problems


def test_the_example_config_loads() -> None:
    settings = load_settings(
        EXAMPLE,
        env={
            "LITELLM_MASTER_KEY": "sk-x",
            "LDAP_BIND_PASSWORD": "pw",
            "SCIM_TOKEN_OKTA": "tok-okta",
            "SCIM_TOKEN_ENTRA": "tok-entra",
            "SYNCD_ADMIN_TOKEN": "admin-tok",
        },
    )
    assert settings.mappings and settings.ldap and settings.litellm.master_key is not None


def test_a_bad_duration_is_named_with_its_key_path() -> None:
    found = problems({"mappings": [{"group": "a"}, {"group": "b"}, {"group": "c", "budget_duration": "yearly2"}]})
    assert found == [
        "mappings[2].budget_duration: 'yearly2' is not a duration (use daily, weekly, monthly, yearly, "
        "or 30d, 12h, 1mo)"
    ]


def test_unknown_keys_bad_roles_and_missing_keys_are_all_reported_at_once() -> None:
    found = problems(
        {"litellm": {"urll": "x"}, "mappings": [{"role": "boss"}], "ldap": [{"name": "x", "url": "ldap://h"}]}
    )
    assert "litellm.urll: unknown key" in found
    assert "mappings[0].group: is required" in found
    assert any(p.startswith("mappings[0].role: 'boss' is not one of:") for p in found)
    assert "ldap[0].users: is required" in found


def test_environment_variables_are_substituted_with_defaults() -> None:
    settings = settings_from_dict(
        {"litellm": {"url": "${LITELLM_URL:-http://127.0.0.1:4000}", "master_key": "${KEY}"}},
        env={"KEY": "sk-from-env"},
    )
    assert settings.litellm.url == "http://127.0.0.1:4000"
    assert settings.litellm.master_key is not None and settings.litellm.master_key.get_secret_value() == "sk-from-env"
    assert problems({"litellm": {"master_key": "${NOT_SET}"}}) == [
        "litellm.master_key: environment variable NOT_SET is not set"
    ]


def test_a_secret_value_is_never_part_of_an_error_or_repr() -> None:
    settings = settings_from_dict({"litellm": {"master_key": "sk-very-secret"}})
    assert "sk-very-secret" not in repr(settings) and "sk-very-secret" not in str(settings.model_dump())


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("sk-in-a-file\n")
    (tmp_path / "pw").write_text("bind-pw")
    settings = settings_from_dict(
        {
            "litellm": {"master_key_file": str(tmp_path / "key")},
            "ldap": [
                {
                    "name": "corp",
                    "url": "ldaps://h",
                    "bind_password_file": str(tmp_path / "pw"),
                    "users": {"base_dn": "dc=x"},
                }
            ],
        }
    )
    assert settings.litellm.master_key is not None and settings.litellm.master_key.get_secret_value() == "sk-in-a-file"
    assert settings.ldap[0].bind_password is not None
    assert settings.ldap[0].bind_password.get_secret_value() == "bind-pw"
    found = problems({"litellm": {"master_key_file": str(tmp_path / "missing")}})
    assert found and found[0].startswith("litellm: cannot read master_key_file") and "No such file" in found[0]


def test_duplicate_source_names_are_refused() -> None:
    found = problems(
        {
            "ldap": [{"name": "corp", "url": "ldap://a", "users": {"base_dn": "x"}}],
            "scim": {"tokens": [{"name": "corp", "token": "t0k3n"}]},
        }
    )
    assert found == ["<top>: source names must be unique; repeated: corp"]


def test_a_broken_yaml_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("litellm:\n  url: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(path) in str(caught.value) and "line" in caught.value.problems[0]


def test_a_config_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(path)


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("daily", "daily"),
        ("weekly", "weekly"),
        ("monthly", "monthly"),
        ("yearly", "365d"),
        ("30d", "30d"),
        ("1mo", "1mo"),
        ("2mo", "60d"),
        ("1y", "365d"),
        ("12h", "12h"),
        ("Hourly", "hourly"),
    ],
)
def test_budget_durations_are_translated_to_what_litellm_accepts(given: str, sent: str) -> None:
    assert budget_duration_for_litellm(given) == sent


@pytest.mark.parametrize("bad", ["yearly2", "0d", "", "1x", "-1d", "mo"])
def test_bad_budget_durations_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        budget_duration_for_litellm(bad)


@pytest.mark.parametrize("too_long", ["600000w", "2800001d", "67200001h", "7672y", "93334mo"])
def test_durations_longer_than_litellm_can_store_are_refused(too_long: str) -> None:
    with pytest.raises(ValueError, match="longer than LiteLLM can store"):
        budget_duration_for_litellm(too_long)
    assert budget_duration_for_litellm("400000w") == "400000w"  # the bound itself: 2,800,000 days


def test_intervals() -> None:
    assert [parse_interval(v) for v in ("30s", "5m", "1h", "24h", "7d", "2w", 90)] == [
        30,
        300,
        3600,
        86400,
        604800,
        1209600,
        90,
    ]
    with pytest.raises(ValueError):
        parse_interval("soon")
