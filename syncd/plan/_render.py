"""How a plan is printed: `render_text` for people, `render_json` for scripts. Both show the whole plan, teams
included, exactly as apply will run it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from syncd.plan._changes import KEY_ACTIONS, MEMBER_ACTIONS, TEAM_ACTIONS, USER_ACTIONS, Action, Plan

__all__ = ["render_json", "render_text", "short_value"]

_SYMBOL = {
    Action.CREATE: "+",
    Action.ADOPT: "&",
    Action.UPDATE: "~",
    Action.REACTIVATE: "^",
    Action.SUSPEND: "-",
    Action.DELETE: "x",
    Action.CONFLICT: "!",
    Action.BLOCK_KEYS: "#",
    Action.UNBLOCK_KEYS: "#",
    Action.CREATE_TEAM: "+",
    Action.ADOPT_TEAM: "&",
    Action.UPDATE_TEAM: "~",
    Action.TEAM_CONFLICT: "!",
    Action.ADD_MEMBER: "+",
    Action.UPDATE_MEMBER: "~",
    Action.REMOVE_MEMBER: "-",
    Action.FORGET_MEMBER: ".",
}


def short_value(value: Any) -> str:
    """A field value as the text renderings print it (lists bracketed, mappings as JSON, None as null)."""
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return "null" if value is None else str(value)


def render_text(plan: Plan) -> str:
    """The plan for people: a summary line, then each change with its fields and their origins; then the teams."""
    counts = plan.counts()
    summary = ", ".join(f"{counts[a]} {a}" for a in (*USER_ACTIONS, *KEY_ACTIONS) if counts[a]) or "no changes"
    lines = [f"Plan: {summary} ({plan.unchanged} unchanged)."]
    if plan.held:
        lines.append(f"HELD: {plan.held}")
    for problem in plan.problems:
        lines.append(f"warning: {problem}")
    changing = {change.user_id for change in plan.changes}
    for bound, name in plan.renamed:
        if bound not in changing:
            lines.append(f"= {bound}: user_id kept as {bound}; the source now says {name} (nothing to change)")
    for change in plan.changes:
        lines.append(f"{_SYMBOL[change.action]} {change.action} {change.user_id}: {change.reason}")
        lines.extend(_diff_lines(change.diffs, created=change.action == Action.CREATE, origins=True))
    if plan.teams or plan.teams_unchanged or plan.teams_waiting:
        lines.extend(_team_lines(plan))
    return "\n".join(lines)


def _team_lines(plan: Plan) -> list[str]:
    counts = plan.team_counts()
    summary = ", ".join(f"{counts[a]} {a}" for a in (*TEAM_ACTIONS, *MEMBER_ACTIONS) if counts[a]) or "no changes"
    lines = [f"Teams: {summary} ({plan.teams_unchanged} teams unchanged)."]
    for change in plan.teams:
        who = f" {change.user_id}" if change.user_id else ""
        extra = f" as {change.role}" if change.role == "admin" else ""
        lines.append(f"{_SYMBOL[change.action]} {change.action} {change.alias}{who}{extra}: {change.reason}")
        lines.extend(_diff_lines(change.diffs, created=change.action == Action.CREATE_TEAM, origins=False))
    return lines


def _diff_lines(diffs: Any, *, created: bool, origins: bool) -> list[str]:
    lines = []
    for diff in diffs:
        if diff.field == "metadata":
            continue
        arrow = short_value(diff.after) if created else f"{short_value(diff.before)} -> {short_value(diff.after)}"
        origin = f"   ({diff.origin})" if diff.origin and origins else ""
        lines.append(f"    {diff.field}: {arrow}{origin}")
    return lines


def render_json(plan: Plan) -> dict[str, Any]:
    """The plan for scripts: the user and key changes, then the team part under `teams`."""
    return {
        "summary": plan.counts(),
        "unchanged": plan.unchanged,
        "unmapped_ignored": plan.unmapped_ignored,
        "held": plan.held,
        "problems": list(plan.problems),
        "renamed": [{"user_id": bound, "source_says": name} for bound, name in plan.renamed],
        "conflicts": len(plan.conflicts),
        "changes": [change.to_dict() for change in plan.changes],
        "teams": {
            "summary": plan.team_counts(),
            "unchanged": plan.teams_unchanged,
            "waiting": plan.teams_waiting,
            "changes": [change.to_dict() for change in plan.teams],
        },
    }
