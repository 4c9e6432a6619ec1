"""Pull LDAP sources and record what they say: shared by `syncd sync`, `syncd plan` and the scheduled jobs of serve.

A pull that fails or comes back incomplete records nothing but the failure (the source's previous state stands) and
is reported in `failed`. Keep one `LdapSource` per source for the life of a process (the `sources` cache): its
directory index is what makes the next incremental or content-synced pull possible. With `true_full`, a
content-synced source first records what changed, then reads every entry: whatever that second record still
changes is drift of the change-based state, logged and counted.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping, Sequence
from typing import Any

from syncd.model import Snapshot

__all__ = ["UnknownSource", "pull_sources"]

log = logging.getLogger(__name__)


class UnknownSource(ValueError):
    """A source name that no `ldap:` entry of the config has."""


def pull_sources(
    settings: Any,
    store: Any,
    names: Sequence[str] = (),
    *,
    record: bool,
    incremental: bool = False,
    sources: MutableMapping[str, Any] | None = None,
    metrics: Any | None = None,
    affected: set[str] | None = None,
    true_full: bool = False,
) -> tuple[list[Snapshot], list[str]]:
    """Pull the named (or every) LDAP source; record complete snapshots when `record`. Returns (snapshots, failed).

    With `metrics`, what each pull skipped or met (entries without mail, dangling members, malformed grants...) is
    counted in syncd_source_problems and syncd_grant_errors. `affected` receives the LiteLLM user_ids whose identity or
    memberships the recorded snapshots changed (what a targeted reconcile needs after an incremental pull).
    """
    from syncd.bulk import gc_paused

    selected = _selected(settings, names)
    with gc_paused():
        return _pull_all(selected, store, record, incremental, sources, metrics, affected, true_full)


def _pull_all(
    selected: list[Any],
    store: Any,
    record: bool,
    incremental: bool,
    sources: MutableMapping[str, Any] | None,
    metrics: Any | None,
    affected: set[str] | None,
    true_full: bool = False,
) -> tuple[list[Snapshot], list[str]]:
    snapshots: list[Snapshot] = []
    failed: list[str] = []
    for source_settings in selected:
        source = _source(source_settings, sources)
        verify = true_full and record and source.content_synced
        if verify and not _catch_up(source, source_settings.name, store, metrics, affected):
            failed.append(source_settings.name)
            continue
        snapshot = _pull_one(
            source, source_settings.name, store, incremental=incremental, true_full=true_full, record=record
        )
        del source  # without a cache, its directory index is garbage now: freed before the record needs memory
        if snapshot is not None and metrics is not None:
            _count_problems(metrics, snapshot)
        if snapshot is None or not snapshot.complete:
            failed.append(source_settings.name)
            continue
        if record:
            result = _record(store, snapshot)
            if result is None:
                failed.append(source_settings.name)
                continue
            if affected is not None:
                affected.update(result.affected_user_ids)
            if verify:
                _report_drift(source_settings.name, result, metrics)
        snapshots.append(snapshot)
    return snapshots, failed


def _catch_up(source: Any, name: str, store: Any, metrics: Any | None, affected: set[str] | None) -> bool:
    """Record a change-based pull, so that the true full pull after it compares with the state of now."""
    snapshot = _pull_one(source, name, store, incremental=False)
    if snapshot is None or not snapshot.complete:
        return False
    if metrics is not None:
        _count_problems(metrics, snapshot)
    result = _record(store, snapshot)
    if result is not None and affected is not None:
        affected.update(result.affected_user_ids)
    return result is not None


def _report_drift(name: str, result: Any, metrics: Any | None) -> None:
    """Log and count what a true full pull changed after a change-based one: rows the content sync got wrong."""
    drift = {
        kind: getattr(result, kind)
        for kind in (
            "identities_added",
            "identities_updated",
            "identities_removed",
            "groups_added",
            "groups_updated",
            "groups_removed",
            "memberships_added",
            "memberships_removed",
        )
        if getattr(result, kind)
    }
    if not drift:
        log.info("true full pull: the change-based state was exact", extra={"source": name})
        return
    log.warning(
        "drift: the true full pull differs from the change-based state (corrected now): %s",
        ", ".join(f"{kind} {count}" for kind, count in drift.items()),
        extra={"source": name},
    )
    if metrics is not None:
        metrics.source_drift.labels(name).inc(sum(drift.values()))


#: snapshot counters that are problems met while pulling (the others are plain counts)
PROBLEM_COUNTERS = (
    "skipped_no_email",
    "skipped_no_id",
    "dangling_members",
    "group_cycles",
    "depth_limit_reached",
    "referrals_ignored",
    "grant_errors",
)


def _count_problems(metrics: Any, snapshot: Snapshot) -> None:
    for kind in PROBLEM_COUNTERS:
        amount = snapshot.counters.get(kind, 0)
        if amount:
            metrics.source_problems.labels(snapshot.source, kind).inc(amount)
    if snapshot.counters.get("grant_errors"):
        metrics.grant_errors.labels(snapshot.source).inc(snapshot.counters["grant_errors"])


def _selected(settings: Any, names: Sequence[str]) -> list[Any]:
    configured = settings.ldap
    unknown = sorted(set(names) - {s.name for s in configured})
    if unknown:
        known = ", ".join(s.name for s in configured) or "none configured"
        raise UnknownSource(f"no LDAP source named {', '.join(unknown)} (known: {known})")
    return [s for s in configured if not names or s.name in names]


def _source(source_settings: Any, cache: MutableMapping[str, Any] | None) -> Any:
    from syncd.sources.ldap import LdapSource

    if cache is None:
        return LdapSource(source_settings)
    if source_settings.name not in cache:
        cache[source_settings.name] = LdapSource(source_settings)
    return cache[source_settings.name]


def _pull_one(
    source: Any, name: str, store: Any, *, incremental: bool, true_full: bool = False, record: bool = True
) -> Snapshot | None:
    from syncd.sources.ldap import LdapSourceError

    state = store.source_state(name)
    since = state.high_water_mark if incremental else None
    if hasattr(source, "expect_recorded"):  # a pull that is not recorded (plan, --dry-run) reads everything
        stored_index = getattr(store, "sync_index", None) if record else None
        source.expect_recorded(state.sync_cookie, (lambda: stored_index(name)) if stored_index else None)
    try:
        snapshot: Snapshot = source.pull(since=since, true_full=true_full) if true_full else source.pull(since=since)
    except LdapSourceError as exc:
        log.error("LDAP pull failed: %s", exc, extra={"source": name})
        store.record_failure(name, str(exc))
        return None
    if not snapshot.complete:
        problems = "; ".join(snapshot.problems) or "incomplete result"
        log.error("LDAP pull incomplete, nothing recorded: %s", problems, extra={"source": name})
        store.record_failure(name, problems)
    return snapshot


def _record(store: Any, snapshot: Snapshot) -> Any:
    from syncd.store.repository import IncompleteSnapshot

    try:
        result = store.record_snapshot(snapshot)
    except IncompleteSnapshot as exc:
        log.error("%s", exc, extra={"source": snapshot.source})
        store.record_failure(snapshot.source, str(exc))
        return None
    log.info(
        "source recorded",
        extra={
            "source": snapshot.source,
            "incremental": snapshot.incremental,
            "change_based": snapshot.change_based,
            "removed": len(snapshot.removed_identities) + len(snapshot.removed_groups),
            "identities": len(snapshot.identities),
            "groups": len(snapshot.groups),
            "affected_users": len(result.affected_user_ids),
        },
    )
    return result
