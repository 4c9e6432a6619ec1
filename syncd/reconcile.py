"""One reconcile run: desired state from the store, LiteLLM's state where needed, one plan, guard, apply.

Reading LiteLLM is the expensive part (about 0.3 s per page of 100 users), so a run first plans against the store's
record of what was applied, then reads only the users that plan would change (batched `/user/list?user_ids=`) and
plans again against what LiteLLM really holds. A drift check instead reads every user, in parallel pages, on its
own interval (`litellm.drift_check`), and corrects whatever was changed by hand in LiteLLM. The keys of the users
about to be suspended and the teams (`/team/list`, when any team is configured, named or recorded) are read too:
the whole plan, teams and memberships included, is computed before anything is applied, and apply runs exactly it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from syncd.apply import Applier, ApplyResult, ApplyStopped
from syncd.bulk import gc_paused
from syncd.desired import desired_from, overlay
from syncd.guard import Verdict
from syncd.holding import Holding, RunGuard
from syncd.litellm import LiteLLM
from syncd.mapping import DesiredState, rules_from_settings
from syncd.metrics import Metrics
from syncd.model import CurrentUser, DesiredUser, KnownConflict, ManagedUser, Snapshot
from syncd.plan import (
    Action,
    AnyChange,
    Binding,
    Plan,
    PlanPolicy,
    Settling,
    bind,
    fields_digest,
    join,
    make_plan,
    plan_teams,
    render_json,
    settle,
    states_after,
    team_groups_of,
)
from syncd.settings import Settings
from syncd.store.repository import DRIFT_STATE, SyncStore

__all__ = [
    "DRIFT_STATE",
    "ReconcileOptions",
    "Reconciler",
    "RunReport",
    "desired_from",
    "overlay",
]

log = logging.getLogger(__name__)


EXIT_OK, EXIT_FAILED, EXIT_HELD = 0, 1, 3


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    """How one run behaves."""

    trigger: str = "cli"
    dry_run: bool = False
    allow_mass_deactivation: bool = False
    #: None: when the last drift check is older than litellm.drift_check; True/False: force
    drift_check: bool | None = None
    #: sources whose pull failed in this run (reported; their previous state stands)
    failed_sources: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    #: a targeted reconcile of these LiteLLM user_ids only (after a SCIM write); empty: everyone
    user_ids: tuple[str, ...] = ()
    #: known conflicts make the run exit 1 (`sync --fail-on-conflict`); without it they are reported, exit 0
    fail_on_conflict: bool = False


@dataclass(slots=True)
class RunReport:
    """What one run did, for the CLI, the status page and the logs."""

    run_id: int | None
    status: str  # success | failed | held | dry_run
    plan: Plan
    applied: ApplyResult | None = None
    problems: list[str] = field(default_factory=list)
    drift_checked: bool = False
    litellm_reads: int = 0
    seconds: float = 0.0
    #: the conflicts this run met (planned, and refused by LiteLLM while applying): nothing written for them
    conflicts: list[KnownConflict] = field(default_factory=list)
    fail_on_conflict: bool = False
    #: what the deactivation guard held (or which approved plan it applied); None when the run applied nothing
    holding: Holding | None = None

    @property
    def exit_code(self) -> int:
        """0 applied or nothing to do, 1 failed (or conflicts under --fail-on-conflict), 3 held by a safety guard."""
        code = {"held": EXIT_HELD, "failed": EXIT_FAILED}.get(self.status, EXIT_OK)
        if code == EXIT_OK and self.fail_on_conflict and self.conflicts:
            return EXIT_FAILED
        return code

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (the plan's changes included)."""
        applied = self.applied.to_dict() if self.applied is not None else None
        return {
            "run_id": self.run_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "problems": self.problems,
            "drift_checked": self.drift_checked,
            "litellm_reads": self.litellm_reads,
            "seconds": round(self.seconds, 3),
            "plan": render_json(self.plan),
            "applied": applied,
            "held_plan": self.holding.to_dict() if self.holding is not None else None,
            "conflicts": [
                {"user_id": c.user_id, "source": c.source, "external_id": c.external_id, "kind": c.kind}
                | {"reason": c.reason, "other": c.other}
                for c in self.conflicts
            ],
        }


@dataclass(frozen=True, slots=True)
class _Planned:
    """A plan, the number of LiteLLM users read for it, and the store corrections it found (written unless dry)."""

    plan: Plan
    reads: int
    #: records LiteLLM already holds as desired (see _in_step)
    in_step: dict[str, ManagedUser]
    #: user_id -> the digest of its recorded applied fields, where the store has none or another (see settled_users)
    stale_digests: dict[str, str]
    #: the user_ids the plan covers, the bound user_ids of renamed people included (None: everyone)
    scope: set[str] | None = None
    #: the deactivation guard's verdict (see syncd.guard); None: nothing for it to weigh
    verdict: Verdict | None = None


def _holders(users: Iterable[CurrentUser]) -> dict[str, tuple[str, bool]]:
    """Lower-cased email -> (user_id, managed by syncd) of the LiteLLM users holding one."""
    return {user.email.lower(): (user.user_id, user.managed) for user in users if user.email}


def _known(change: Any) -> KnownConflict:
    """A planned conflict as the store keeps it."""
    return KnownConflict(
        change.user_id,
        change.source or "",
        change.external_id or "",
        change.conflict_kind or "user_id_taken",
        change.reason,
        change.other,
        change.inputs_digest,
    )


def _in_step(
    tentative: Plan, plan: Plan, managed: Mapping[str, ManagedUser], current: Mapping[str, CurrentUser]
) -> dict[str, ManagedUser]:
    """Records to correct: users the store's record says to update but LiteLLM, once read, already holds as desired.

    A write LiteLLM committed but whose answer was lost (a 502 or a timeout after the commit) is journaled as failed
    and leaves the record behind; left so, a later change back to the recorded value would plan nothing and be lost.
    """
    changing = {change.user_id for change in plan.changes}
    out = {}
    for change in tentative.changes:
        user = current.get(change.user_id)
        if change.action == "update" and change.user_id not in changing and user is not None:
            applied = dict(user.fields, metadata=user.metadata)
            out[change.user_id] = replace(managed[change.user_id], applied=applied)
    return out


class Reconciler:
    """Runs reconciles for one configuration, store and LiteLLM client."""

    def __init__(
        self,
        settings: Settings,
        store: SyncStore,
        client: LiteLLM,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        should_stop: Callable[[], bool] | None = None,
        on_outcome: Callable[[AnyChange, str], None] | None = None,
    ) -> None:
        self.settings, self.store, self.client, self.metrics, self.clock = settings, store, client, metrics, clock
        #: asked before applying, before each change and before the team step; True stops the run (ApplyStopped)
        self.should_stop = should_stop
        #: called with each journaled change (user or team) and its outcome: done, failed, skipped
        self.on_outcome = on_outcome
        #: True while the run writes to LiteLLM (as opposed to planning, which only reads)
        self.applying = False
        self.rules = rules_from_settings(settings)
        self._guard = RunGuard(store, settings.policy, clock)  # made again for each run
        self._verdict: Verdict | None = None

    # -- planning (reads only) ------------------------------------------------------------------------------------
    def desired(self, snapshots: Iterable[Snapshot] = (), user_ids: Collection[str] | None = None) -> DesiredState:
        """The desired state from the store (of everyone, or of `user_ids`), with unrecorded full snapshots overlaid."""
        snapshots = list(snapshots)
        fresh = {snapshot.source for snapshot in snapshots if snapshot.complete and not snapshot.incremental}
        identities, groups = self.store.load_people(user_ids, exclude_sources=fresh)
        identities, groups = overlay(identities, groups, snapshots)
        return desired_from(self.store, self.rules, identities, groups)

    def policy(self, *, allow_mass_deactivation: bool = False) -> PlanPolicy:
        """The plan policy of the settings."""
        policy = self.settings.policy
        return PlanPolicy(
            adopt_existing=policy.adopt_existing,
            deactivation=policy.deactivation,
            delete_after_s=policy.delete_after,
            unmapped_users=policy.unmapped_users,
            max_deactivations=policy.max_deactivations,
            max_deactivation_ratio=policy.max_deactivation_ratio,
            allow_mass_deactivation=allow_mass_deactivation,
            now=self.clock(),
            suspended_leave_teams=policy.suspended_leave_teams,
        )

    def drift_due(self) -> bool:
        """True when the last drift check is older than litellm.drift_check."""
        last = self.store.source_state(DRIFT_STATE).last_success_at
        return last is None or self.clock() - last.timestamp() >= self.settings.litellm.drift_check

    def plan(
        self,
        *,
        snapshots: Iterable[Snapshot] = (),
        drift_check: bool = False,
        allow_mass_deactivation: bool = False,
        user_ids: Collection[str] | None = None,
    ) -> tuple[Plan, int]:
        """Plan against LiteLLM's state where it matters; returns the plan and the number of users read.

        With `user_ids`, only those users are planned (and only their identities and groups are loaded).
        """
        planned = self._plan(snapshots, drift_check, allow_mass_deactivation, user_ids)
        return planned.plan, planned.reads

    def _plan(
        self,
        snapshots: Iterable[Snapshot],
        drift_check: bool,
        allow_mass_deactivation: bool,
        user_ids: Collection[str] | None = None,
    ) -> _Planned:
        with gc_paused():
            return self._plan_paused(snapshots, drift_check, allow_mass_deactivation, user_ids)

    def _plan_paused(
        self,
        snapshots: Iterable[Snapshot],
        drift_check: bool,
        allow_mass_deactivation: bool,
        user_ids: Collection[str] | None,
    ) -> _Planned:
        only = set(user_ids) if user_ids else None
        drift_check = drift_check and only is None
        desired = self.desired(snapshots, only)
        if only is not None:  # the people loaded with them: merged with them (identity.merge_by), or sharing an email
            only |= set(desired.users) | set(desired.unmapped)
        if only is None and self.metrics is not None:  # a targeted run sees only some of the people
            for kind in ("email", "user_id"):
                self.metrics.identity_conflicts.labels(kind).set(sum(c.kind == kind for c in desired.conflicts))
        # the short rows first: users recorded with exactly the desired fields are settled without reading their
        # records (a drift check compares everyone with LiteLLM itself, so settles nobody)
        settling = settle(desired, self.store.managed_digests(only), enabled=not drift_check)
        settled = settling.settled
        managed, stale = self._records(only, settling)
        binding = self._bind(desired, managed, only, settled)
        if only is not None:  # a renamed person is planned at their bound user_id
            only |= {bound for bound, name in binding.renamed.items() if name in only}
        # a drift check retries every stored conflict; otherwise one whose inputs are unchanged is not retried
        known = {} if drift_check else self.store.load_conflicts(only)
        # a targeted run reads only its users' records; the deactivation guard still weighs every active user
        active = self.store.managed_counts().get("active", 0) if only is not None else settling.active
        policy = self.policy(allow_mass_deactivation=allow_mass_deactivation)
        facts: dict[str, Any] = {"binding": binding, "known": known, "only": only, "settled": settled}
        tentative = make_plan(desired, managed, {}, policy, active_managed=active, **facts)
        if drift_check:
            current = self._read_everyone()
            read: Collection[str] = set(current) | set(desired.users) | set(managed) | set(binding.desired.users)
            facts["email_holders"] = _holders(current.values())
            facts["unblocked"] = self._unblocked(managed, current)
        else:
            read = [change.user_id for change in tentative.changes if change.action != Action.CONFLICT]
            if not read:
                plan = self._whole(tentative, binding.desired, only, desired.held)
                return _Planned(plan, 0, {}, stale, only)
            current = {user.user_id: user for user in self.client.read_users(read)}
            facts["email_holders"] = self._email_holders(tentative)
        plan = make_plan(desired, managed, current, policy, read=read, active_managed=active, **facts)
        reads = len(current) if drift_check else len(read)
        in_step = _in_step(tentative, plan, managed, current)
        verdict = self._guard.judge(plan, active, allow=allow_mass_deactivation)  # per run and over the window
        plan = replace(plan, held=verdict.reason)
        waiting = {change.user_id for change in verdict.held}  # their memberships stand while they are held
        whole = self._whole(plan, binding.desired, only, {*desired.held, *waiting})
        return _Planned(whole, reads, in_step, stale, only, verdict)

    def _whole(self, plan: Plan, desired: DesiredState, only: set[str] | None, held: Collection[str]) -> Plan:
        """The user plan made whole with the teams and memberships."""
        return join(plan, self._plan_teams(plan, desired.users, only, held))

    def _plan_teams(
        self, users: Plan, desired: Mapping[str, DesiredUser], only: set[str] | None, held: Collection[str]
    ) -> Plan:
        """The team part of the plan, against the users' states once the user plan is applied (one /team/list read,
        none when no team is configured, named by a mapping, made from SCIM groups or recorded)."""
        records = self.store.load_teams()
        scim = self._scim_teams(desired)
        if not (records or scim or self.settings.teams or any(u.teams for u in desired.values())):
            return Plan()
        return plan_teams(
            desired,
            self.settings.teams,
            self.client.read_teams(),
            records,
            states_after(users, self.store.user_states()),
            suspended_leave_teams=self.settings.policy.suspended_leave_teams,
            groups_as_teams=scim,
            team_groups=team_groups_of(self.settings.mappings),
            only=only,
            held=held,
        )

    def _scim_teams(self, desired: Mapping[str, DesiredUser]) -> dict[str, list[str]]:
        """user_id -> the SCIM group names that become teams (scim.groups_as_teams), matched by user_id or email."""
        scim = self.settings.scim
        if not scim.groups_as_teams:
            return {}
        by_email = {user.email.lower(): user.user_id for user in desired.values() if user.email}
        teams: dict[str, list[str]] = {}
        for member in self.store.scim_team_members(scim.source_names):
            user_id = member.user_id if member.user_id in desired else by_email.get(member.email_lower)
            if user_id is not None:
                teams.setdefault(user_id, []).append(member.group)
        return teams

    def _bind(
        self, desired: DesiredState, managed: dict[str, ManagedUser], only: set[str] | None, settled: Collection[str]
    ) -> Binding:
        """The desired state at the bound user_ids (see plan.bind); a targeted run first reads the records of its
        people that are not under their own name (a full run has every unsettled record already)."""
        if only is not None:
            known = {(m.source, m.external_id) for m in managed.values()}
            people = [(u.source, u.external_id) for name, u in desired.users.items() if name not in settled]
            people += [(i.source, i.external_id) for i in desired.unmapped.values()]
            missing = {person for person in people if person not in known}
            if missing:
                managed.update(self.store.records_bound_to(missing))
        return bind(desired, managed, settled)

    def _email_holders(self, tentative: Plan) -> dict[str, tuple[str, bool]]:
        """Who holds the emails this plan would write (LiteLLM's /user/update does not check that they are free).

        One filtered /user/list per email, or, when there are more emails to check than LiteLLM has users (a first
        sync), one read of every user.
        """
        emails = set()
        for change in tentative.changes:
            email = (change.after or {}).get("user_email")
            new = change.action in (Action.CREATE, Action.ADOPT) or any(d.field == "user_email" for d in change.diffs)
            if email and new and change.action != Action.CONFLICT:
                emails.add(str(email).lower())
        if not emails:
            return {}
        if self.client.user_count() <= len(emails):
            return _holders(self.client.read_all_users())
        found: list[CurrentUser] = []
        for email in sorted(emails):
            found.extend(self.client.read_users_with_email(email))
        return _holders(found)

    def _unblocked(self, managed: Mapping[str, ManagedUser], current: Mapping[str, CurrentUser]) -> dict[str, Any]:
        """Per suspended user (drift check), the keys syncd blocked that LiteLLM now shows unblocked."""
        out = {}
        for user_id, record in managed.items():
            if record.state != "suspended" or user_id not in current or not record.blocked_keys:
                continue
            blocked = set(record.blocked_keys)
            reopened = tuple(k.token for k in self.client.read_keys(user_id) if k.token in blocked and not k.blocked)
            if reopened:
                out[user_id] = reopened
        return out

    def _records(self, only: set[str] | None, settling: Settling) -> tuple[dict[str, ManagedUser], dict[str, str]]:
        """The whole records of the users not settled, and the applied digests to store where they are missing."""
        others = settling.others
        if only is None and len(others) > len(settling.settled):  # one scan rather than thousands of lookups
            managed = {uid: record for uid, record in self.store.load_managed().items() if uid in others}
        else:
            managed = self.store.load_managed(others)
        stale = {}
        for user_id, record in managed.items():
            digest = fields_digest(record.applied)
            if digest != others.get(user_id, ("", None))[1]:
                stale[user_id] = digest
        return managed, stale

    def _read_everyone(self) -> dict[str, CurrentUser]:
        return {user.user_id: user for user in self.client.read_all_users()}

    # -- a whole run ------------------------------------------------------------------------------------------------
    def run(self, options: ReconcileOptions = ReconcileOptions(), snapshots: Iterable[Snapshot] = ()) -> RunReport:
        """Plan, guard and apply once; every outcome is recorded as a sync run."""
        started = self.clock()
        drift = self.drift_due() if options.drift_check is None else options.drift_check
        drift = drift and not options.user_ids
        run_id = None if options.dry_run else self.store.start_run(options.trigger, options.sources)
        self._guard = RunGuard(self.store, self.settings.policy, self.clock)
        try:
            planned = self._plan(snapshots, drift, options.allow_mass_deactivation, options.user_ids or None)
            plan, self._verdict = planned.plan, planned.verdict
            report = RunReport(run_id, "dry_run", plan, drift_checked=drift, litellm_reads=planned.reads)
            report.fail_on_conflict = options.fail_on_conflict
            report.conflicts = [_known(change) for change in plan.conflicts]
            report.problems.extend(plan.problems)
            report.problems.extend(
                f"source {name}: pull failed, its previous state stands" for name in options.failed_sources
            )
            if not options.dry_run:
                self.store.refresh_applied_digests(planned.stale_digests)
                for record in planned.in_step.values():  # see _in_step
                    self.store.save_managed(record)
                self._stop_point("stopped before applying")
                self._writing(self._apply, report, options)
                self._store_conflicts(report, planned.scope)
        except BaseException as exc:
            status = "stopped" if isinstance(exc, ApplyStopped) else "failed"
            if run_id is not None:
                self.store.finish_run(run_id, status, {}, error=f"{type(exc).__name__}: {exc}")
            self._count_run(options, status, started)
            raise
        report.seconds = self.clock() - started
        if run_id is not None:
            data = report.to_dict()
            summary = {"plan": data["plan"]["summary"], "applied": data["applied"], "problems": report.problems}
            summary["teams"] = {"plan": data["plan"]["teams"]["summary"]}
            self.store.finish_run(run_id, report.status, summary, error=report.plan.held)
        self._count_run(options, report.status, started)
        return report

    def _store_conflicts(self, report: RunReport, scope: set[str] | None) -> None:
        """Keep the conflicts this run met (planned and refused) as the store's: not retried as they are."""
        if report.applied is not None:
            report.conflicts.extend(report.applied.conflicts)
        self.store.replace_conflicts(report.conflicts, user_ids=scope)
        if report.conflicts:
            log.warning("%d known conflict(s): nothing written for them (see syncd plan)", len(report.conflicts))
        if self.metrics is not None:
            self.metrics.conflicts.set(self.store.conflict_count())

    def _stop_point(self, why: str) -> None:
        if self.should_stop is not None and self.should_stop():
            raise ApplyStopped(why)

    def _writing(self, step: Callable[[RunReport, ReconcileOptions], None], *args: Any) -> None:
        self.applying = True
        try:
            step(*args)
        finally:
            self.applying = False

    def _apply(self, report: RunReport, options: ReconcileOptions) -> None:
        """Apply the plan but the deactivations the guard holds (syncd.holding); those are kept as a held plan."""
        assert report.run_id is not None
        verdict = self._verdict or Verdict(report.plan)
        holding = self._guard.settle(report.plan, verdict, report.run_id, targeted=bool(options.user_ids))
        report.holding = holding
        report.plan = replace(report.plan, held=holding.reason if holding.held else None)  # why, all said
        if holding.held:
            log.error("%d deactivation(s) held by the deactivation guard: %s", len(holding.held), holding.reason)
            if self.metrics is not None:
                self.metrics.guard_holds.inc()
        applier = Applier(
            self.client,
            self.store,
            run_id=report.run_id,
            concurrency=self.settings.litellm.concurrency,
            on_outcome=self._count_change,
            clock=self.clock,
            should_stop=self.should_stop,
        )
        completed = False
        try:
            report.applied = applier.apply(holding.plan)
            completed = True
        finally:
            self._guard.finish(report.run_id, completed=completed)
        if report.drift_checked:
            self.store.mark_success(DRIFT_STATE)
        ok = report.applied.ok and not options.failed_sources
        report.status = ("held" if holding.held else "success") if ok else "failed"

    def _count_change(self, change: AnyChange, status: str) -> None:
        self._guard.note(change, status)
        if self.metrics is not None:
            self.metrics.changes.labels(change.action, status).inc()
        if self.on_outcome is not None:
            self.on_outcome(change, status)

    def _count_run(self, options: ReconcileOptions, status: str, started: float) -> None:
        if self.metrics is None or options.dry_run:
            return
        label = ",".join(options.sources) or "all"
        self.metrics.runs.labels(label, status).inc()
        self.metrics.run_duration.labels(label).observe(self.clock() - started)
        if status == "success":
            self.metrics.last_success.labels(label).set(self.clock())
        for state, count in self.store.managed_counts().items():
            self.metrics.managed_users.labels(state).set(count)
