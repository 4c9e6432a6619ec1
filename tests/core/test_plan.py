"""The plan, change type by change type, the guard, and its properties (idempotence, unmanaged users untouched)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.mapping import DesiredState
from syncd.model import CurrentUser, DesiredUser, FieldOrigin, Identity, ManagedUser
from syncd.plan import (
    KEY_ACTIONS,
    KnownConflict,
    Plan,
    PlanPolicy,
    bind,
    desired_fields,
    fields_digest,
    make_plan,
    marker,
    render_json,
    render_text,
    settled_users,
)


def want(uid: str, *, active: bool = True, **kw: Any) -> DesiredUser:
    base: dict[str, Any] = {
        "role": "internal_user",
        "models": ("gpt-4o",),
        "max_budget": 10.0,
        "budget_duration": "30d",
        "origins": {"max_budget": FieldOrigin("mapping", "llm")},
    }
    base.update(kw)
    return DesiredUser(uid, f"{uid}@example.com", "corp", f"ext-{uid}", active, **base)


def state(*users: DesiredUser, unmapped: tuple[str, ...] = ()) -> DesiredState:
    result = DesiredState({u.user_id: u for u in users})
    for uid in unmapped:
        result.unmapped[uid] = Identity("corp", f"ext-{uid}", uid, f"{uid}@example.com")
    return result


def managed_as(user: DesiredUser, state_: str = "active", **kw: Any) -> ManagedUser:
    return ManagedUser(user.user_id, user.source, user.external_id, state_, desired_fields(user), **kw)


def current_as(user: DesiredUser, **changes: Any) -> CurrentUser:
    fields = desired_fields(user)
    metadata = changes.pop("metadata", fields.pop("metadata"))
    fields.pop("metadata", None)
    fields.update(changes)
    return CurrentUser(user.user_id, user.email, fields, metadata)


def actions(plan: Plan) -> dict[str, str]:
    """The user changes by user_id (the key changes that go with them left out)."""
    return {c.user_id: c.action for c in plan.changes if c.action not in KEY_ACTIONS}


def key_changes(plan: Plan) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    return [(c.action, c.user_id, c.blocked_keys, c.depends_on) for c in plan.changes if c.action in KEY_ACTIONS]


def test_a_new_person_is_created_with_every_field_and_its_origin() -> None:
    alice = want("alice", auto_create_keys=True)
    plan = make_plan(state(alice), {})
    (change,) = plan.changes
    assert change.action == "create" and change.auto_create_key is True
    assert change.after is not None and change.after["metadata"]["syncd"] == marker("corp", "ext-alice")
    assert change.after["metadata"]["scim_active"] is True
    budget = next(d for d in change.diffs if d.field == "max_budget")
    assert (budget.after, budget.origin) == (10.0, "mapping llm")


def test_nothing_changes_when_the_store_matches() -> None:
    alice = want("alice")
    plan = make_plan(state(alice), {"alice": managed_as(alice)})
    assert plan.empty and plan.unchanged == 1


def test_a_changed_field_is_an_update_with_a_field_level_diff() -> None:
    before = want("alice")
    after = want("alice", max_budget=25.0, models=("gpt-4o", "claude"))
    plan = make_plan(state(after), {"alice": managed_as(before)})
    (change,) = plan.changes
    assert change.action == "update"
    assert {d.field: (d.before, d.after) for d in change.diffs} == {
        "max_budget": (10.0, 25.0),
        "models": (["gpt-4o"], ["gpt-4o", "claude"]),
    }


def test_a_limit_no_group_gives_any_more_is_cleared_with_an_explicit_null() -> None:
    before = want("alice", tpm_limit=100)
    plan = make_plan(state(want("alice")), {"alice": managed_as(before)})
    (diff,) = plan.changes[0].diffs
    assert (diff.field, diff.before, diff.after) == ("tpm_limit", 100, None)


def test_drift_made_in_litellm_is_corrected_when_litellm_was_read() -> None:
    alice = want("alice")
    current = {"alice": current_as(alice, user_role="proxy_admin")}
    plan = make_plan(state(alice), {"alice": managed_as(alice)}, current)
    (change,) = plan.changes
    assert change.action == "update" and change.reason == "drift in LiteLLM corrected"
    assert [(d.field, d.before, d.after) for d in change.diffs] == [("user_role", "proxy_admin", "internal_user")]


def test_metadata_others_put_in_litellm_is_kept() -> None:
    alice = want("alice", max_budget=20.0)
    current = {
        "alice": current_as(
            want("alice"), metadata={"team_note": "x", "syncd": marker("corp", "ext-alice"), "scim_active": True}
        )
    }
    plan = make_plan(state(alice), {"alice": managed_as(want("alice"))}, current)
    assert plan.changes[0].after is not None and plan.changes[0].after["metadata"]["team_note"] == "x"


def test_a_disabled_person_is_suspended_and_a_returning_one_reactivated_with_the_same_keys() -> None:
    alice = want("alice")
    plan = make_plan(state(want("alice", active=False)), {"alice": managed_as(alice)})
    assert actions(plan) == {"alice": "suspend"} and "disabled in corp" in plan.changes[0].reason
    suspended = managed_as(alice, "suspended", blocked_keys=("k1", "k2"), suspended_at=1.0)
    plan = make_plan(state(alice), {"alice": suspended})
    unblock, change = plan.changes  # the keys syncd blocked are unblocked first, then the user is reactivated
    assert unblock.action == "unblock_keys" and unblock.blocked_keys == ("k1", "k2")
    assert change.action == "reactivate" and change.blocked_keys == ("k1", "k2") and change.depends_on == (unblock.ref,)


def test_someone_gone_from_the_source_is_suspended_or_deleted_by_policy() -> None:
    alice = want("alice")
    assert actions(make_plan(state(), {"alice": managed_as(alice)})) == {"alice": "suspend"}
    plan = make_plan(state(), {"alice": managed_as(alice)}, policy=PlanPolicy(deactivation="delete"))
    assert actions(plan) == {"alice": "delete"}


def test_a_suspended_user_is_deleted_after_delete_after() -> None:
    alice = want("alice")
    suspended = {"alice": managed_as(alice, "suspended", suspended_at=1000.0)}
    early = PlanPolicy(delete_after_s=86400, now=1000.0 + 3600)
    late = PlanPolicy(delete_after_s=86400, now=1000.0 + 86400)
    assert make_plan(state(), suspended, policy=early).empty
    plan = make_plan(state(), suspended, policy=late)
    assert actions(plan) == {"alice": "delete"} and plan.deactivations == 0


def test_a_managed_person_leaving_every_mapped_group_is_suspended_by_default_or_ignored_by_policy() -> None:
    alice = want("alice")
    plan = make_plan(state(unmapped=("alice",)), {"alice": managed_as(alice)})
    assert actions(plan) == {"alice": "suspend"} and plan.deactivations == 1
    assert "policy.unmapped_users" in plan.changes[0].reason
    plan = make_plan(
        state(unmapped=("alice",)), {"alice": managed_as(alice)}, policy=PlanPolicy(unmapped_users="ignore")
    )
    assert plan.empty and plan.unmapped_ignored == 1


def test_a_person_never_provisioned_and_in_no_mapped_group_is_left_alone() -> None:
    plan = make_plan(state(unmapped=("bob",)), {})
    assert plan.empty and plan.unmapped_ignored == 0


def test_an_interrupted_suspension_is_finished_without_counting_against_the_guard() -> None:
    alice = want("alice")
    plan = make_plan(
        state(),
        {"alice": managed_as(alice, "suspending", blocked_keys=("k1",))},
        policy=PlanPolicy(max_deactivations=0),
    )
    # LiteLLM was told already (scim_active false): only the keys are left to block, the ones recorded first
    assert actions(plan) == {} and key_changes(plan) == [("block_keys", "alice", ("k1",), ())]
    assert plan.deactivations == 0 and not plan.held


def test_an_existing_unmanaged_user_is_a_conflict_unless_adoption_is_on() -> None:
    alice = want("alice")
    current = {"alice": current_as(alice, metadata={})}
    plan = make_plan(state(alice), {}, current)
    assert actions(plan) == {"alice": "conflict"}
    plan = make_plan(state(alice), {}, current, PlanPolicy(adopt_existing=True))
    assert actions(plan) == {"alice": "adopt"} and plan.changes[0].adopted


def test_a_user_carrying_syncds_marker_is_taken_back_not_recreated() -> None:
    alice = want("alice")
    current = {"alice": current_as(alice)}
    plan = make_plan(state(alice), {}, current)
    assert actions(plan) == {"alice": "adopt"} and "marker" in plan.changes[0].reason


def test_a_managed_user_deleted_by_hand_in_litellm_is_created_again() -> None:
    alice = want("alice")
    plan = make_plan(state(alice), {"alice": managed_as(alice)}, {}, read=["alice"])
    assert actions(plan) == {"alice": "create"}


def test_the_guard_holds_a_mass_deactivation_and_can_be_overridden() -> None:
    people = [want(f"u{i}") for i in range(20)]
    managed = {p.user_id: managed_as(p) for p in people}
    plan = make_plan(state(*people[:15]), managed, policy=PlanPolicy(max_deactivations=50, max_deactivation_ratio=0.10))
    assert plan.deactivations == 5 and plan.held and "5 deactivations" in plan.held and "limit of 2" in plan.held
    plan = make_plan(state(*people[:15]), managed, policy=PlanPolicy(allow_mass_deactivation=True))
    assert not plan.held
    plan = make_plan(state(*people[:18]), managed, policy=PlanPolicy(max_deactivations=1))
    assert plan.held and "limit of 1" in plan.held


def test_one_deactivation_in_a_small_fleet_is_not_held() -> None:
    people = [want(f"u{i}") for i in range(3)]
    plan = make_plan(state(*people[:2]), {p.user_id: managed_as(p) for p in people})
    assert plan.deactivations == 1 and not plan.held


def test_render_text_and_json_show_actions_fields_and_origins() -> None:
    plan = make_plan(
        state(want("alice"), want("bob", max_budget=50.0)),
        {"bob": managed_as(want("bob")), "carol": managed_as(want("carol"))},
    )
    text = render_text(plan)
    assert "Plan: 1 create, 1 update, 1 suspend, 1 block_keys (0 unchanged)." in text
    assert "# block_keys carol: the user's keys blocked: suspended" in text
    assert "~ update bob: desired fields changed" in text and "max_budget: 10.0 -> 50.0   (mapping llm)" in text
    assert "- suspend carol: no longer in corp" in text
    data = json.loads(json.dumps(render_json(plan)))
    assert data["summary"]["create"] == 1 and data["changes"][0]["user_id"] == "alice"


# -- properties ---------------------------------------------------------------------------------------------------
_ids = st.sampled_from([f"u{i}" for i in range(8)])
_desired = st.builds(
    lambda uid, active, budget, models, role: want(uid, active=active, max_budget=budget, models=models, role=role),
    _ids,
    st.booleans(),
    st.sampled_from([None, 1.0, 5.0]),
    st.sampled_from([(), ("a",), ("a", "b")]),
    st.sampled_from(["internal_user", "proxy_admin", "internal_user_viewer"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(_desired, unique_by=lambda u: u.user_id), st.lists(_desired, unique_by=lambda u: u.user_id), st.sets(_ids)
)
def test_applying_a_plan_then_planning_again_changes_nothing(
    litellm_proxy: Any, desired: list[DesiredUser], previously: list[DesiredUser], unmanaged: set[str]
) -> None:
    """The real applier runs the plan against the fake LiteLLM: planning again finds nothing left to do, LiteLLM
    holds what was desired, and users syncd does not manage are never touched."""
    managed = {u.user_id: managed_as(u) for u in previously if u.active}
    policy = PlanPolicy(allow_mass_deactivation=True)
    foreign = {uid: CurrentUser(uid, None, {}, {}) for uid in unmanaged if uid not in managed}
    proxy = litellm_proxy
    proxy.reset(managed, foreign)
    untouched = {uid: dict(proxy.fake.users[uid]) for uid in foreign}
    first = make_plan(state(*desired), managed, foreign, policy)
    for change in first.changes:  # never touching a user syncd does not manage
        if change.user_id in foreign:
            assert change.action == "conflict"
    proxy.apply(first)
    after = proxy.store.load_managed()
    second = make_plan(state(*desired), after, foreign, policy)
    assert [c for c in second.changes if c.action != "conflict"] == []
    assert {uid: proxy.fake.users[uid] for uid in foreign} == untouched
    for user in desired:
        held = proxy.fake.users.get(user.user_id)
        if user.user_id in foreign or held is None:
            continue
        assert held["metadata"]["scim_active"] is user.active
        if user.active:
            want = desired_fields(user)
            assert (held["user_role"], held["max_budget"]) == (want["user_role"], want["max_budget"])
            assert not want["models"] or sorted(held["models"]) == sorted(want["models"])


# -- settled users: the digest short cut must agree with the field-by-field comparison --------------------------------
def _digests(managed: Mapping[str, ManagedUser]) -> dict[str, tuple[str, str | None]]:
    return {uid: (m.state, fields_digest(m.applied)) for uid, m in managed.items()}


@settings(max_examples=200, deadline=None)
@given(
    email=st.sampled_from(["alice@example.com", "Alice@Example.com", "bob@example.com"]),
    role=st.sampled_from(["internal_user", "proxy_admin"]),
    models=st.lists(st.sampled_from(["gpt-4o", "claude", "o1"]), unique=True, max_size=3),
    tpm=st.none() | st.integers(0, 5),
    budget=st.none() | st.sampled_from([10, 10.0, 10.5]),
    alias=st.none() | st.sampled_from(["Alice", "Al"]),
    extra=st.dictionaries(st.sampled_from(["team", "cost_center"]), st.sampled_from(["a", "b"]), max_size=2),
)
def test_equal_digests_always_mean_an_empty_plan(
    email: str, role: str, models: list[str], tpm: int | None, budget: float | None, alias: str | None, extra: Any
) -> None:
    """Whatever the applied fields, a user the digest settles is one the full comparison finds unchanged."""
    alice = want("alice", models=("gpt-4o", "claude"), tpm_limit=3, max_budget=10.0, user_alias="Alice")
    applied = desired_fields(alice) | {
        "user_email": email,
        "user_role": role,
        "models": models,
        "tpm_limit": tpm,
        "max_budget": budget,
        "user_alias": alias,
    }
    applied["metadata"] = {**applied["metadata"], **extra}
    managed = {"alice": ManagedUser("alice", "corp", "ext-alice", "active", applied)}
    full = make_plan(state(alice), managed)
    settled = settled_users(state(alice), _digests(managed))
    if settled:
        assert full.empty
    # and the digest is not so strict that it misses what is really the same
    if email.lower() == "alice@example.com" and (role, set(models), tpm, budget, alias, extra) == (
        "internal_user",
        {"gpt-4o", "claude"},
        3,
        10.0,
        "Alice",
        {},
    ):
        assert settled == {"alice"}


def test_settled_users_are_unchanged_without_their_records_and_still_weigh_in_the_guard() -> None:
    people = [want(f"u{n}") for n in range(20)]
    managed = {u.user_id: managed_as(u) for u in people}
    managed["u0"] = managed_as(want("u0", max_budget=99.0))  # differs: not settled
    settled = settled_users(state(*people), _digests(managed))
    assert settled == {f"u{n}" for n in range(1, 20)}

    # the settled ones' records left out
    records = {"u0": managed["u0"], "gone1": managed_as(want("gone1")), "gone2": managed_as(want("gone2"))}
    policy = PlanPolicy(max_deactivation_ratio=0.1)
    plan = make_plan(state(*people), records, settled=settled, policy=policy)
    assert actions(plan) == {"u0": "update", "gone1": "suspend", "gone2": "suspend"}
    assert plan.unchanged == 19 and plan.held is None  # 2 of 22 active are within 10%
    assert make_plan(state(*people[:1]), records, policy=policy).held  # 2 of 3 are not


def test_suspended_or_disabled_users_are_never_settled() -> None:
    alice, bob = want("alice"), want("bob", active=False)
    managed = {"alice": managed_as(alice, "suspended"), "bob": managed_as(want("bob"))}
    assert settled_users(state(alice, bob), _digests(managed)) == set()
    assert settled_users(state(alice), {"alice": ("active", None)}) == set()


@settings(max_examples=200, deadline=None)
@given(
    models=st.lists(st.sampled_from(["gpt-4o", "claude", "o1"]), unique=True, max_size=3).map(tuple),
    budget=st.none() | st.sampled_from([10.0, 10.5]),
    metadata=st.dictionaries(st.sampled_from(["team", "syncd", "cost"]), st.sampled_from(["a", 1, None]), max_size=2),
    alias=st.none() | st.sampled_from(["Alice", "None", ""]),
    email=st.sampled_from(["alice@example.com", "ALICE@example.com", ""]),
)
def test_the_settled_shortcut_computes_exactly_the_digest_of_the_desired_fields(
    models: tuple[str, ...], budget: float | None, metadata: dict[str, Any], alias: str | None, email: str
) -> None:
    """settled_users builds the desired digest in parts (shared per grant combination): it must be fields_digest."""
    people = [
        replace(want(uid, models=models, max_budget=budget, metadata=metadata, user_alias=alias), email=email)
        for uid in ("alice", "bob")
    ]
    digests = {u.user_id: ("active", fields_digest(desired_fields(u))) for u in people}
    assert settled_users(state(*people), digests) == {"alice", "bob"}
    digests["bob"] = ("active", fields_digest(desired_fields(replace(people[1], user_alias="other"))))
    assert settled_users(state(*people), digests) == {"alice"}


# -- identity over time (issue 13) ------------------------------------------------------------------------------
def renamed(user: DesiredUser, uid: str, **kw: Any) -> DesiredUser:
    """The same person (same external id) under another user_id, as the source now names them."""
    return replace(user, user_id=uid, email=kw.pop("email", f"{uid}@example.com"), **kw)


def test_a_rename_keeps_the_bound_user_id_and_is_one_update() -> None:
    jdoe = want("jdoe")
    records = {"jdoe": managed_as(jdoe)}
    desired = state(renamed(jdoe, "jsmith"))
    binding = bind(desired, records)
    plan = make_plan(desired, records, binding=binding)
    assert actions(plan) == {"jdoe": "update"}
    change = plan.changes[0]
    assert change.note == "user_id kept as jdoe; corp now says jsmith"
    assert [d.field for d in change.diffs] == ["user_email"] and change.after["user_email"] == "jsmith@example.com"
    assert "user_id kept as jdoe" in render_text(plan)
    assert render_json(plan)["renamed"] == [{"user_id": "jdoe", "source_says": "jsmith"}]


def test_a_rename_that_changes_no_field_writes_nothing_but_says_so() -> None:
    jdoe = want("jdoe")
    records = {"jdoe": managed_as(jdoe)}
    desired = state(renamed(jdoe, "jsmith", email="jdoe@example.com"))
    plan = make_plan(desired, records, binding=bind(desired, records))
    assert plan.empty and plan.unchanged == 1 and plan.renamed == (("jdoe", "jsmith"),)
    assert "= jdoe: user_id kept as jdoe; the source now says jsmith" in render_text(plan)


def test_a_new_person_with_a_leavers_user_id_is_a_conflict_never_a_reactivation() -> None:
    leaver = want("jsmith")
    records = {"jsmith": managed_as(leaver, "suspended", blocked_keys=("k1",))}
    newcomer = replace(want("jsmith"), external_id="ext-other", email="john.smith@example.com")
    desired = state(newcomer)
    plan = make_plan(desired, records, binding=bind(desired, records))
    assert actions(plan) == {"jsmith": "conflict"}
    change = plan.changes[0]
    assert change.conflict_kind == "bound_elsewhere" and change.other == "corp:ext-jsmith"
    assert "ext-jsmith" in change.reason and "ext-other" in change.reason and "syncd release jsmith" in change.reason
    assert change.external_id == "ext-other"


def test_a_new_person_with_an_active_users_user_id_is_a_conflict_and_the_other_left() -> None:
    holder = want("jsmith")
    records = {"jsmith": managed_as(holder)}
    newcomer = replace(want("jsmith"), external_id="ext-other")
    desired = state(newcomer)
    plan = make_plan(desired, records, binding=bind(desired, records))
    # the holder is gone from the source (suspended as a leaver); the newcomer does not get the user_id
    assert sorted((c.action, c.external_id) for c in plan.changes) == [
        ("block_keys", "ext-jsmith"),
        ("conflict", "ext-other"),
        ("suspend", "ext-jsmith"),
    ]


def test_a_renamed_person_keeps_their_user_id_when_a_newcomer_takes_their_old_name() -> None:
    jdoe = want("jdoe")
    records = {"jdoe": managed_as(jdoe)}
    newcomer = replace(want("jdoe"), external_id="ext-new", email="new@example.com")
    desired = state(renamed(jdoe, "jsmith"), newcomer)
    plan = make_plan(desired, records, binding=bind(desired, records))
    assert sorted((c.action, c.user_id, c.external_id) for c in plan.changes) == [
        ("conflict", "jdoe", "ext-new"),
        ("update", "jdoe", "ext-jdoe"),
    ]


def test_a_deleted_users_record_binds_nobody() -> None:
    old = want("jsmith")
    records = {"jsmith": managed_as(old, "deleted")}
    newcomer = replace(want("jsmith"), external_id="ext-other")
    desired = state(newcomer)
    plan = make_plan(desired, records, binding=bind(desired, records))
    assert actions(plan) == {"jsmith": "create"}


def test_a_renamed_person_in_no_mapped_group_is_found_at_the_bound_user_id() -> None:
    jdoe = want("jdoe")
    records = {"jdoe": managed_as(jdoe)}
    desired = state()
    desired.unmapped["jsmith"] = Identity("corp", "ext-jdoe", "jsmith", "jsmith@example.com")
    plan = make_plan(desired, records, policy=PlanPolicy(unmapped_users="ignore"), binding=bind(desired, records))
    assert plan.empty and plan.unmapped_ignored == 1


def test_an_email_held_by_another_litellm_user_is_a_conflict_on_create_and_on_update() -> None:
    alice = want("alice")
    holders = {"alice@example.com": ("someone", False)}
    plan = make_plan(state(alice), {}, email_holders=holders)
    assert actions(plan) == {"alice": "conflict"}
    assert plan.changes[0].conflict_kind == "email_taken" and plan.changes[0].other == "someone"
    records = {"alice": managed_as(replace(alice, email="old@example.com"))}
    plan = make_plan(state(alice), records, email_holders=holders)
    assert actions(plan) == {"alice": "conflict"}
    # an update that does not touch the email is not held back by it
    plan = make_plan(state(replace(alice, max_budget=99.0)), {"alice": managed_as(alice)}, email_holders=holders)
    assert actions(plan) == {"alice": "update"}
    # the user's own email is no conflict
    plan = make_plan(state(alice), {}, email_holders={"alice@example.com": ("alice", True)})
    assert actions(plan) == {"alice": "create"}
    # held by someone syncd manages (who may give it up in this run): a conflict now, but retried next run
    plan = make_plan(state(alice), {}, email_holders={"alice@example.com": ("bob", True)})
    assert actions(plan) == {"alice": "conflict"} and plan.changes[0].inputs_digest is None
    plan = make_plan(state(alice), {}, email_holders=holders)
    assert plan.changes[0].inputs_digest is not None


def test_a_known_conflict_is_not_retried_until_its_inputs_change() -> None:
    alice = want("alice")
    digest = fields_digest(desired_fields(alice))
    known = {"alice": KnownConflict("alice", "corp", "ext-alice", "email_taken", "the email is taken", "x", digest)}
    plan = make_plan(state(alice), {}, known=known)
    assert actions(plan) == {"alice": "conflict"} and plan.changes[0].conflict_kind == "email_taken"
    assert "known conflict" in plan.changes[0].reason
    plan = make_plan(state(replace(alice, email="alice2@example.com")), {}, known=known)
    assert actions(plan) == {"alice": "create"}


def test_a_manual_unsuspension_seen_by_a_drift_check_is_suspended_again() -> None:
    alice = want("alice")
    records = {"alice": managed_as(alice, "suspended", blocked_keys=("k1",), suspended_at=1000.0)}
    meta = {**desired_fields(alice)["metadata"], "scim_active": False}
    still = {"alice": current_as(alice, metadata=meta)}
    assert make_plan(state(), records, still).empty
    plan = make_plan(state(), records, still, unblocked={"alice": ("k1",)})
    assert actions(plan) == {"alice": "suspend"} and plan.changes[0].blocked_keys == ("k1",)
    assert plan.changes[0].suspended_at == 1000.0  # delete_after still counts from the first suspension
    reopened = {"alice": current_as(alice, metadata={**meta, "scim_active": True})}
    plan = make_plan(state(), records, reopened)
    assert actions(plan) == {"alice": "suspend"} and plan.deactivations == 0
    assert "scim_active" in plan.changes[0].reason
