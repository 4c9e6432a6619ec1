"""A SCIM person's identity over time, through the store to the fake LiteLLM (issue 13), on SQLite and PostgreSQL:
a userName replace keeps the bound user_id, and a leaver's userName reused by a new SCIM user is a conflict."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from syncd.litellm import LiteLLMClient
from syncd.reconcile import ReconcileOptions, Reconciler, RunReport
from syncd.settings import settings_from_dict
from syncd.store.repository import SyncStore
from syncd.testing import serve_in_thread
from syncd.testing.fake_litellm import FakeLiteLLM, create_fake_litellm

from .conftest import Scim

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MASTER = "sk-scim-lifecycle"


class Pushed:
    """The SCIM app (as okta), the fake LiteLLM and a reconciler over the same store."""

    def __init__(self, scim: Scim, url: str, fake: FakeLiteLLM, database_url: str) -> None:
        self.scim, self.fake = scim, fake
        self.store = SyncStore(scim.engine)
        self.client = LiteLLMClient(url, MASTER, max_retries=1, backoff_base_s=0.01)
        self.settings = settings_from_dict(
            {
                "database": {"url": database_url},
                "litellm": {"url": url, "master_key": MASTER},
                "mappings": [{"group": "llm", "role": "internal_user", "auto_create_keys": True}],
                "policy": {"max_deactivation_ratio": 1.0},
            }
        )
        self.group_id = ""

    def user(self, name: str, email: str | None = None) -> str:
        body = {"schemas": [USER], "userName": name, "emails": [{"value": email or f"{name}@example.com"}]}
        answer = self.scim.post("/Users", body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    def group(self, members: list[str]) -> None:
        body = {"schemas": [GROUP], "displayName": "llm", "members": [{"value": m} for m in members]}
        answer = self.scim.post("/Groups", body)
        assert answer.status_code == 201, answer.text
        self.group_id = str(answer.json()["id"])

    def add_member(self, member: str) -> None:
        operation = {"op": "add", "path": "members", "value": [{"value": member}]}
        answer = self.scim.patch(f"/Groups/{self.group_id}", operation)
        assert answer.status_code in (200, 204), answer.text

    def sync(self, **options: Any) -> RunReport:
        return Reconciler(self.settings, self.store, self.client).run(ReconcileOptions(drift_check=False, **options))


@pytest.fixture
def pushed(scim: Scim) -> Iterator[Pushed]:
    app = create_fake_litellm(MASTER)
    with serve_in_thread(app) as url:
        p = Pushed(scim, url, app.state.fake, str(scim.engine.url.render_as_string(hide_password=False)))
        yield p
        p.client.close()


def test_a_username_replace_is_one_update_nothing_suspended_no_409(pushed: Pushed) -> None:
    jdoe = pushed.user("jdoe")
    pushed.group([jdoe, pushed.user("other")])
    assert pushed.sync().applied.by_action == {"create": 2}
    operations = [
        {"op": "replace", "path": "userName", "value": "jsmith"},
        {"op": "replace", "path": "emails", "value": [{"value": "jsmith@example.com", "primary": True}]},
    ]
    answer = pushed.scim.patch(f"/Users/{jdoe}", *operations)
    assert answer.status_code == 200, answer.text
    pushed.fake.reset_calls()
    report = pushed.sync()
    assert report.exit_code == 0 and report.applied.by_action == {"update": 1}, report.to_dict()
    (change,) = report.plan.changes
    assert change.user_id == "jdoe" and change.note == "user_id kept as jdoe; okta now says jsmith"
    assert pushed.fake.write_calls() == 1 and pushed.fake.write_calls("/user/new") == 0
    user = pushed.fake.users["jdoe"]
    assert user["user_email"] == "jsmith@example.com" and user["metadata"]["scim_active"] is True
    assert "jsmith" not in pushed.fake.users


def test_a_leavers_username_reused_by_a_new_scim_user_is_a_conflict_and_the_keys_stay_blocked(
    pushed: Pushed,
) -> None:
    bob = pushed.user("bob")
    pushed.group([bob, pushed.user("other")])
    pushed.sync()
    (key,) = pushed.fake.keys_of("bob")
    assert pushed.scim.delete(f"/Users/{bob}").status_code == 204
    assert pushed.sync().applied.by_action == {"suspend": 1, "block_keys": 1}
    newcomer = pushed.user("bob", "robert@example.com")  # another SCIM id
    pushed.add_member(newcomer)
    pushed.fake.reset_calls()
    report = pushed.sync()
    assert report.exit_code == 0 and pushed.fake.write_calls() == 0
    (conflict,) = report.conflicts
    assert conflict.kind == "bound_elsewhere" and conflict.external_id == newcomer and bob in conflict.reason
    assert pushed.fake.keys[key["token"]]["blocked"] is True
    assert pushed.fake.users["bob"]["user_email"] == "bob@example.com"
    assert pushed.sync(fail_on_conflict=True).exit_code == 1


def test_a_scim_user_without_emails_is_created_without_one(pushed: Pushed) -> None:
    answer = pushed.scim.post("/Users", {"schemas": [USER], "userName": "svc-ci"})
    assert answer.status_code == 201, answer.text
    pushed.group([str(answer.json()["id"])])
    assert pushed.sync().applied.by_action == {"create": 1}
    assert pushed.fake.users["svc-ci"]["user_email"] is None
