"""The plan: desired state against what syncd last applied and what LiteLLM holds. Purely computational.

One `Plan` holds every change of a reconcile, computed before anything is applied: users (`make_plan`), the keys
syncd blocks and unblocks for them, teams and memberships (`plan_teams`, `join`). Each change names its `Action`,
why, and the changes it depends on; apply executes exactly these changes and nothing else. `render_text` and
`render_json` print a plan as it is.
"""

from syncd.fields import USER_FIELDS, desired_fields, fields_digest, marker
from syncd.model import KnownConflict
from syncd.plan._changes import (
    DEACTIVATIONS,
    KEY_ACTIONS,
    MEMBER_ACTIONS,
    TEAM_ACTIONS,
    USER_ACTIONS,
    Action,
    AnyChange,
    Change,
    FieldDiff,
    Plan,
    PlanPolicy,
    TeamChange,
)
from syncd.plan._render import render_json, render_text, short_value
from syncd.plan._teams import (
    MARKER,
    SETTING_FIELDS,
    TeamSpec,
    alias_key,
    join,
    plan_teams,
    states_after,
    team_groups_of,
    team_id_for,
)
from syncd.plan._users import (
    Binding,
    Settling,
    bind,
    make_plan,
    settle,
    settled_users,
    with_key_changes,
)

__all__ = [
    "DEACTIVATIONS",
    "KEY_ACTIONS",
    "MARKER",
    "MEMBER_ACTIONS",
    "SETTING_FIELDS",
    "TEAM_ACTIONS",
    "USER_ACTIONS",
    "USER_FIELDS",
    "Action",
    "AnyChange",
    "Binding",
    "Change",
    "FieldDiff",
    "KnownConflict",
    "Plan",
    "PlanPolicy",
    "Settling",
    "TeamChange",
    "TeamSpec",
    "alias_key",
    "bind",
    "desired_fields",
    "fields_digest",
    "join",
    "make_plan",
    "marker",
    "plan_teams",
    "render_json",
    "render_text",
    "settle",
    "settled_users",
    "short_value",
    "states_after",
    "team_groups_of",
    "team_id_for",
    "with_key_changes",
]
