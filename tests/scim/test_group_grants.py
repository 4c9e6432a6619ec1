"""A pushed group's grant in syncd's Group extension (issue 9): stored, validated, and what its members get."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.mapping import desired_state, rules_from_settings
from syncd.settings import settings_from_dict
from syncd.store.repository import SyncStore

from .conftest import Scim, open_scim

GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GRANT = "urn:ietf:params:scim:schemas:extension:syncd:2.0:Group"


def _user(scim: Scim, name: str) -> str:
    answer = scim.post("/Users", {"schemas": [USER], "userName": name, "emails": [{"value": f"{name}@example.com"}]})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _group(scim: Scim, name: str, members: list[str], grant: dict[str, Any]) -> Any:
    body = {"schemas": [GROUP, GRANT], "displayName": name, "members": [{"value": m} for m in members], GRANT: grant}
    return scim.post("/Groups", body)


def _desired(scim: Scim) -> Any:
    identities, groups = SyncStore(scim.engine).load_people()
    return desired_state(identities, groups, rules_from_settings(settings_from_dict({})))


def test_a_grant_pushed_on_a_group_gives_its_members_the_fields(scim: Scim) -> None:
    alice = _user(scim, "alice")
    grant = {
        "role": "proxy_admin_viewer",
        "models": "gpt-4o,claude",
        "maxBudget": 25.5,
        "budgetDuration": "yearly",
        "tpmLimit": 1000,
        "autoCreateKeys": True,
        "teams": "ml",
    }
    answer = _group(scim, "ml-team", [alice], grant)
    assert answer.status_code == 201, answer.text
    assert answer.json()[GRANT]["maxBudget"] == "25.5" and answer.json()[GRANT]["models"] == "gpt-4o,claude"
    user = _desired(scim).users["alice"]
    assert (user.role, user.models, user.max_budget, user.budget_duration) == (
        "proxy_admin_viewer",
        ("claude", "gpt-4o"),
        25.5,
        "365d",
    )
    assert (user.tpm_limit, user.auto_create_keys, user.teams) == (1000, True, ("ml",))
    assert user.origins["role"].kind == "group_attribute" and user.origins["role"].name == "ml-team"


def test_a_changed_grant_reconciles_every_member(scim: Scim) -> None:
    ids = [_user(scim, name) for name in ("bob", "carol")]
    group_id = _group(scim, "g", ids, {"maxBudget": "5"}).json()["id"]
    scim.writes.calls.clear()
    answer = scim.patch(f"/Groups/{group_id}", {"op": "replace", "path": f"{GRANT}:maxBudget", "value": "50"})
    assert answer.status_code in (200, 204), answer.text
    assert scim.writes.all == {"bob", "carol"}
    assert _desired(scim).users["bob"].max_budget == 50.0


@pytest.mark.parametrize(
    ("grant", "problem"),
    [
        ({"role": "superuser"}, "'superuser' is not a LiteLLM role"),
        ({"maxBudget": "lots"}, "'lots' is not a number"),
        ({"budgetDuration": "yearly2"}, "'yearly2' is not a duration"),
    ],
)
def test_a_malformed_grant_is_kept_as_sent_but_grants_nothing_with_a_warning(
    scim: Scim, grant: dict[str, Any], problem: str, caplog: Any
) -> None:
    dave = _user(scim, "dave")
    answer = _group(scim, "bad", [dave], grant)
    assert answer.status_code == 201 and answer.json()[GRANT]
    assert "dave" in _desired(scim).unmapped
    assert any(problem in r.getMessage() and "SCIM group 'bad'" in r.getMessage() for r in caplog.records)


def test_proxy_admin_from_scim_needs_allow_admin_grants(tmp_path: Any) -> None:
    for allowed, role in ((False, "internal_user"), (True, "proxy_admin")):
        for scim in open_scim(f"sqlite:///{tmp_path}/admin-{allowed}.db", allow_admin_grants=allowed):
            erin = _user(scim, "erin")
            assert _group(scim, "admins", [erin], {"role": "proxy_admin", "models": "gpt-4o"}).status_code == 201
            user = _desired(scim).users["erin"]
            assert (user.role, user.models) == (role, ("gpt-4o",))
