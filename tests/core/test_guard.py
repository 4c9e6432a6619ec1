"""The deactivation guard over time and the held-plan decisions (syncd.guard), scenario by scenario. Pure."""

from __future__ import annotations

from dataclasses import replace

from syncd.guard import (
    GuardLimits,
    HeldPlanView,
    Verdict,
    applicable,
    change_from_dict,
    decide,
    decide_targeted,
    held_digest,
    judge,
)
from syncd.plan import Action, Change, FieldDiff, Plan, TeamChange

LIMITS = GuardLimits(max_deactivations=50, max_deactivation_ratio=0.10, window_s=3600.0)
NOW = 1_000_000.0


def suspend(user: str, why: str = "no longer in corp") -> Change:
    return Change(action=Action.SUSPEND, user_id=user, reason=why, source="corp", external_id=f"ext-{user}")


def create(user: str) -> Change:
    return Change(
        action=Action.CREATE,
        user_id=user,
        reason="in corp",
        source="corp",
        external_id=f"ext-{user}",
        after={"user_email": f"{user}@example.com"},
    )


def plan(*changes: Change) -> Plan:
    return Plan(changes=tuple(changes))


def test_paced_deletions_are_held_by_the_window() -> None:
    """One leaver a run, 1.5 a second: the per-run limit never trips, the window does at the 11th of 100."""
    recent: list[float] = []
    active, applied, held = 100, 0, None
    for i in range(90):
        now = NOW + i / 1.5
        verdict = judge(plan(suspend(f"u{i}")), recent=recent, active=active, limits=LIMITS, now=now)
        if verdict.held:
            held = (i, verdict)
            break
        recent.append(now)
        active -= 1
        applied += 1
    assert applied == 10 and held is not None and held[0] == 10
    verdict = held[1]
    assert verdict.reason is not None and "in the last 1h" in verdict.reason and "limit of 10 per 1h" in verdict.reason
    assert verdict.applies.changes == () and verdict.applies.held is None
    assert verdict.retry_at == recent[0] + 3600.0  # the oldest leaving the window lets one more through


def test_the_window_forgets_what_is_older_than_it() -> None:
    old = [NOW - 3601.0] * 10
    verdict = judge(plan(suspend("a")), recent=old, active=90, limits=LIMITS, now=NOW)
    assert not verdict.held and verdict.reason is None


def test_a_held_plan_holds_its_deactivations_not_the_new_hire_behind_them() -> None:
    leavers = [suspend(f"u{i}") for i in range(30)]
    hire = create("new-hire")
    verdict = judge(plan(*leavers, hire), recent=[], active=100, limits=LIMITS, now=NOW)
    assert len(verdict.held) == 30 and "over the limit of 10 per run" in (verdict.reason or "")
    assert verdict.applies.changes == (hire,)
    assert verdict.retry_at is None  # too many for one window: waiting alone does not let them through


def test_what_depends_on_a_held_deactivation_waits_with_it() -> None:
    """A held suspension's key blocking and a held delete's forgotten memberships are held too; the rest applies."""
    leavers = [suspend(f"u{i}") for i in range(30)]
    keys = [replace(c, action=Action.BLOCK_KEYS, guarded=False, depends_on=(c.ref,)) for c in leavers]
    hire = create("new-hire")
    forget = TeamChange(
        action=Action.FORGET_MEMBER,
        alias="t",
        key="t",
        team_id="t1",
        reason="gone",
        user_id="u0",
        depends_on=("user:u0",),
    )
    join = TeamChange(
        action=Action.ADD_MEMBER,
        alias="t",
        key="t",
        team_id="t1",
        reason="in g",
        user_id="new-hire",
        depends_on=(hire.ref,),
    )
    whole = Plan(changes=(*leavers, *keys, hire), teams=(forget, join))
    verdict = judge(whole, recent=[], active=100, limits=LIMITS, now=NOW)
    assert len(verdict.held) == 30
    assert verdict.applies.changes == (hire,) and verdict.applies.teams == (join,)


def test_deactivations_that_take_no_access_away_are_never_held() -> None:
    finishing = [
        Change(
            action=Action.SUSPEND,
            user_id=f"s{i}",
            reason="finishing",
            source="corp",
            external_id=f"e{i}",
            guarded=False,
        )
        for i in range(30)
    ]
    verdict = judge(plan(*finishing), recent=[NOW] * 50, active=100, limits=LIMITS, now=NOW)
    assert not verdict.held and verdict.applies.changes == tuple(finishing)


def test_allow_mass_deactivation_holds_nothing() -> None:
    verdict = judge(plan(*[suspend(f"u{i}") for i in range(30)]), recent=[], active=100, limits=LIMITS, now=NOW)
    assert verdict.held
    allowed = judge(
        plan(*[suspend(f"u{i}") for i in range(30)]), recent=[], active=100, limits=LIMITS, now=NOW, allow=True
    )
    assert not allowed.held and len(allowed.applies.changes) == 30


def test_the_digest_names_who_and_why_in_any_order() -> None:
    a, b = suspend("a"), suspend("b")
    assert held_digest([a, b]) == held_digest([b, a])
    assert held_digest([a, b]) != held_digest([a])
    assert held_digest([a]) != held_digest([suspend("a", "disabled in corp")])
    assert held_digest([a]) == held_digest(
        [
            Change(
                action=Action.SUSPEND, user_id="a", reason=a.reason, source="corp", external_id="ext-a", before={"x": 1}
            )
        ]
    )


def _held(n: int) -> tuple[Plan, Verdict]:
    p = plan(*[suspend(f"u{i}") for i in range(n)], create("hire"))
    return p, judge(p, recent=[], active=100, limits=LIMITS, now=NOW)


def test_a_new_hold_is_stored_and_an_old_plan_with_other_inputs_superseded() -> None:
    p, verdict = _held(20)
    decision = decide(verdict, [HeldPlanView(1, "held", "other-digest")])
    assert decision.plan_id is None and len(decision.held) == 20 and decision.superseded == (1,)
    assert applicable(p, decision).changes == (create("hire"),)


def test_the_same_hold_is_kept_under_its_plan() -> None:
    _, verdict = _held(20)
    decision = decide(verdict, [HeldPlanView(4, "held", verdict.digest or "")])
    assert decision.plan_id == 4 and len(decision.held) == 20 and decision.superseded == ()


def test_an_approved_plan_with_unchanged_inputs_applies_those_deactivations() -> None:
    p, verdict = _held(20)
    stored = tuple(change_from_dict(c.to_dict()) for c in verdict.held)
    decision = decide(verdict, [HeldPlanView(2, "approved", verdict.digest or "", stored)])
    assert decision.plan_id == 2 and decision.approved and not decision.held
    applied = applicable(p, decision)
    assert applied.held is None and applied.changes == p.changes  # the same people, for the same reasons


def test_an_approved_plan_whose_inputs_changed_is_held_again() -> None:
    _, before = _held(20)
    _, after = _held(21)  # one more person left since the approval
    decision = decide(after, [HeldPlanView(2, "approved", before.digest or "")])
    assert decision.plan_id is None and len(decision.held) == 21 and decision.superseded == (2,)


def test_a_rejected_plan_stays_held_until_the_source_changes() -> None:
    deactivations = [suspend(f"u{i}") for i in range(5)]
    window_open = judge(plan(*deactivations), recent=[], active=100, limits=LIMITS, now=NOW)
    assert not window_open.held  # the guard alone would let these five go now
    rejected = HeldPlanView(3, "rejected", window_open.digest or "")
    decision = decide(window_open, [rejected])
    assert decision.plan_id == 3 and len(decision.held) == 5 and "rejected" in (decision.reason or "")


def test_a_rejected_plan_whose_source_changed_for_others_is_held_for_a_new_decision() -> None:
    deactivations = [suspend(f"u{i}") for i in range(5)]
    first = judge(plan(*deactivations), recent=[], active=100, limits=LIMITS, now=NOW)
    rejected = HeldPlanView(3, "rejected", first.digest or "", tuple(deactivations))
    back = judge(plan(*deactivations[:4]), recent=[], active=100, limits=LIMITS, now=NOW)  # u4 came back
    decision = decide(back, [rejected])
    assert decision.plan_id is None and len(decision.held) == 4 and decision.superseded == (3,)
    assert "4 of these 4 deactivations were in a rejected held plan" in (decision.reason or "")
    fixed = judge(plan(suspend("someone-else")), recent=[], active=100, limits=LIMITS, now=NOW)  # all came back
    decision = decide(fixed, [rejected])
    assert not decision.held and decision.superseded == (3,)


def test_nothing_held_any_more_supersedes_the_open_plans() -> None:
    quiet = judge(plan(create("x")), recent=[], active=100, limits=LIMITS, now=NOW)
    decision = decide(quiet, [HeldPlanView(1, "held", "d1"), HeldPlanView(2, "rejected", "d2")])
    assert not decision.held and set(decision.superseded) == {1, 2}


def test_a_targeted_run_holds_every_deactivation_while_a_plan_is_open() -> None:
    verdict = judge(plan(suspend("a"), create("b")), recent=[], active=100, limits=LIMITS, now=NOW)
    assert not verdict.held
    decision = decide_targeted(verdict, open_plans=True)
    assert [c.user_id for c in decision.held] == ["a"]
    p = plan(suspend("a"), create("b"))
    verdict = judge(p, recent=[], active=100, limits=LIMITS, now=NOW)
    assert [c.user_id for c in applicable(p, decide_targeted(verdict, open_plans=True)).changes] == ["b"]
    assert not decide_targeted(verdict, open_plans=False).held


def test_a_change_survives_its_stored_form() -> None:
    change = Change(
        action=Action.SUSPEND,
        user_id="a",
        reason="why",
        source="corp",
        external_id="e1",
        before={"user_email": "a@example.com"},
        diffs=(FieldDiff("models", ["x"], ["y"], "group g"),),
        blocked_keys=("k1",),
        suspended_at=12.5,
    )
    assert change_from_dict(change.to_dict()) == change
