"""What `GET /status` and the status page at `/` show: last runs, pending and failed changes, held plans, sources.

`collect_status(store, detailed=...)` gathers it as JSON-ready data; without `detailed` only aggregates (counts,
statuses, times, source names) are included, never a user id, an error text or a directory DN. `render_page(data)`
renders the same for a person: a table of the last runs and an inline SVG chart of the changes per run (no script,
nothing fetched from elsewhere); with details, the open held plans with the people they would deactivate, and a
form (POST /held/ID, carrying the session's CSRF token) to approve or reject each.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from syncd.store.repository import DRIFT_STATE, SyncStore

__all__ = ["collect_status", "render_page"]

_RUNS = 30


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds")


def _run(record: Any, *, detailed: bool) -> dict[str, Any]:
    summary = record.summary or {}
    applied = summary.get("applied") or {}
    started, finished = record.started_at, record.finished_at
    seconds = (finished - started).total_seconds() if started and finished else None
    run = {
        "id": record.id,
        "trigger": record.trigger,
        "sources": record.sources,
        "status": record.status,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "seconds": None if seconds is None else round(seconds, 3),
        "planned": {k: v for k, v in (summary.get("plan") or {}).items() if v},
        "done": applied.get("done", 0),
        "failed": applied.get("failed", 0),
        "skipped": applied.get("skipped", 0),
    }
    if detailed:
        run["problems"] = summary.get("problems") or []
        run["error"] = record.error
    return run


def _source(state: Any, *, detailed: bool) -> dict[str, Any]:
    data = {
        "source": state.source,
        "last_full_at": _iso(state.last_full_at),
        "last_success_at": _iso(state.last_success_at),
        "last_attempt_at": _iso(state.last_attempt_at),
        "failing": bool(state.last_error),
    }
    if detailed:
        data["last_error"] = state.last_error
        data["high_water_mark"] = state.high_water_mark
    return data


def collect_status(store: SyncStore, *, detailed: bool, replica: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The daemon's state for /status and the page; `detailed` adds user ids and error texts."""
    runs = [_run(record, detailed=detailed) for record in store.recent_runs(_RUNS)]
    states = store.source_states()
    drift = next((state for state in states if state.source == DRIFT_STATE), None)
    journal = store.journal_counts()
    data: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "replica": dict(replica or {}),
        "last_success_at": _iso_ts(store.last_success_at()),
        "runs": runs,
        "held": [run for run in runs if run["status"] == "held"],
        "held_plans_open": len(store.held_plans()),
        "changes": {"pending": journal.get("pending", 0), "failed_total": journal.get("failed", 0)},
        "managed_users": store.managed_counts(),
        "conflicts": store.conflict_count(),
        "sources": [_source(state, detailed=detailed) for state in states if state is not drift],
        "last_drift_check_at": _iso(drift.last_success_at) if drift is not None else None,
        "detailed": detailed,
    }
    if detailed:
        data["held_plans"] = [plan.to_dict() for plan in store.held_plans()]
        data["conflict_rows"] = [
            {k: row[k] for k in ("user_id", "source", "external_id", "kind", "other", "reason")}
            | {"detected_at": _iso(row["detected_at"])}
            for row in store.conflict_rows(50)
        ]
        data["failed_changes"] = [
            {k: row[k] for k in ("id", "run_id", "key", "action", "error")} for row in store.failed_changes(20)
        ]
    return data


def _iso_ts(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")


# -- the page ---------------------------------------------------------------------------------------------------------
_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px} .muted{color:#667085}
.cards{display:flex;gap:12px;flex-wrap:wrap} .card{background:#fff;border:1px solid #e3e6ea;border-radius:8px;
padding:10px 14px;min-width:150px} .card b{display:block;font-size:20px}
table{border-collapse:collapse;background:#fff;width:100%;border:1px solid #e3e6ea}
th,td{padding:5px 8px;border-bottom:1px solid #eef0f3;text-align:left;white-space:nowrap} th{background:#f0f2f5}
td.num{text-align:right} td.wrap{white-space:normal}
.success{color:#067647} .failed{color:#b42318} .held{color:#b54708} .running{color:#175cd3}
svg{background:#fff;border:1px solid #e3e6ea;border-radius:8px} form{margin-top:8px}
h3{font-size:14px;margin:16px 0 4px}
.held-plan{background:#fff;border:1px solid #f5c27a;border-radius:8px;padding:8px 12px;margin-bottom:12px}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _cards(data: Mapping[str, Any]) -> str:
    replica = data.get("replica") or {}
    managed = data.get("managed_users") or {}
    cards = [
        ("Last successful run", _short(data.get("last_success_at"))),
        ("Pending changes", data["changes"]["pending"]),
        ("Last drift check", _short(data.get("last_drift_check_at"))),
        ("Held plans", data.get("held_plans_open", 0)),
        ("Known conflicts", data.get("conflicts", 0)),
        ("Managed users", ", ".join(f"{n} {state}" for state, n in sorted(managed.items())) or "none"),
        ("This replica", f"{replica.get('id', '?')} ({'leader' if replica.get('leader') else 'follower'})"),
    ]
    inner = "".join(f'<div class="card"><span class="muted">{_esc(k)}</span><b>{_esc(v)}</b></div>' for k, v in cards)
    return f'<div class="cards">{inner}</div>'


def _short(iso: str | None) -> str:
    return "never" if not iso else iso[:19].replace("T", " ") + " UTC"


def _chart(runs: Sequence[Mapping[str, Any]]) -> str:
    """Changes per run (done green, failed red), oldest on the left, as inline SVG."""
    ordered = list(reversed(runs))
    width, height, left, bottom = 1100, 220, 40, 30
    peak = max([run["done"] + run["failed"] for run in ordered] + [1])
    slot = (width - left - 10) / max(len(ordered), 1)
    bars, labels = [], []
    for i, run in enumerate(ordered):
        x = left + i * slot + slot * 0.15
        w = slot * 0.7
        done_h = (height - bottom - 10) * run["done"] / peak
        fail_h = (height - bottom - 10) * run["failed"] / peak
        y_done = height - bottom - done_h
        tip = f"run {run['id']} {run['status']}: {run['done']} done, {run['failed']} failed ({run['started_at']})"
        if run["status"] == "held":  # a held plan changed nothing: mark it where its bar would be
            bars.append(
                f'<g><title>{_esc(tip)}</title><rect x="{x:.1f}" y="{height - bottom - 6}" width="{w:.1f}" '
                f'height="6" fill="#f79009"/><text x="{x + w / 2:.1f}" y="{height - bottom - 10}" font-size="11" '
                f'text-anchor="middle" fill="#b54708">held</text></g>'
            )
        bars.append(
            f'<g><title>{_esc(tip)}</title><rect x="{x:.1f}" y="{y_done:.1f}" width="{w:.1f}" height="{done_h:.1f}" '
            f'fill="#32a467"/><rect x="{x:.1f}" y="{y_done - fail_h:.1f}" width="{w:.1f}" height="{fail_h:.1f}" '
            f'fill="#d92d20"/></g>'
        )
        if i % max(1, len(ordered) // 10) == 0:
            label = (run["started_at"] or "")[11:19]
            labels.append(
                f'<text x="{x + w / 2:.1f}" y="{height - 10}" font-size="10" text-anchor="middle">{label}</text>'
            )
    axis = (
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#98a2b3"/>'
        f'<text x="{left - 6}" y="16" font-size="10" text-anchor="end">{peak}</text>'
        f'<text x="{left - 6}" y="{height - bottom}" font-size="10" text-anchor="end">0</text>'
    )
    legend = (
        f'<rect x="{width - 190}" y="8" width="10" height="10" fill="#32a467"/>'
        f'<text x="{width - 176}" y="17" font-size="11">done</text>'
        f'<rect x="{width - 130}" y="8" width="10" height="10" fill="#d92d20"/>'
        f'<text x="{width - 116}" y="17" font-size="11">failed</text>'
    )
    return (
        f'<svg id="changes-chart" role="img" aria-label="changes per run" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{axis}{legend}{"".join(bars)}{"".join(labels)}</svg>'
    )


def _runs_table(runs: Sequence[Mapping[str, Any]]) -> str:
    head = "<tr><th>Run</th><th>Started (UTC)</th><th>Trigger</th><th>Sources</th><th>Status</th>"
    head += "<th>Seconds</th><th>Planned</th><th>Done</th><th>Failed</th><th>Skipped</th></tr>"
    rows = []
    for run in runs:
        planned = ", ".join(f"{n} {action}" for action, n in sorted(run["planned"].items())) or "-"
        rows.append(
            f"<tr><td>{run['id']}</td><td>{_esc((run['started_at'] or '')[:19].replace('T', ' '))}</td>"
            f"<td>{_esc(run['trigger'])}</td><td>{_esc(run['sources'] or 'all')}</td>"
            f'<td class="{_esc(run["status"])}">{_esc(run["status"])}</td>'
            f'<td class="num">{_esc(run["seconds"])}</td><td>{_esc(planned)}</td>'
            f'<td class="num">{run["done"]}</td><td class="num">{run["failed"]}</td>'
            f'<td class="num">{run["skipped"]}</td>'
            "</tr>"
        )
    return f'<table id="runs">{head}{"".join(rows) or "<tr><td colspan=10>no runs yet</td></tr>"}</table>'


def _sources_table(sources: Sequence[Mapping[str, Any]], *, detailed: bool) -> str:
    head = "<tr><th>Source</th><th>Last success</th><th>Last full pull</th><th>State</th>"
    head += "<th>Last error</th></tr>" if detailed else "</tr>"
    rows = []
    for source in sources:
        state = '<span class="failed">failing</span>' if source["failing"] else '<span class="success">ok</span>'
        row = f"<tr><td>{_esc(source['source'])}</td><td>{_esc(source['last_success_at'])}</td>"
        row += f"<td>{_esc(source['last_full_at'])}</td><td>{state}</td>"
        row += f"<td class=wrap>{_esc(source.get('last_error'))}</td></tr>" if detailed else "</tr>"
        rows.append(row)
    return f'<table id="sources">{head}{"".join(rows) or "<tr><td>none recorded yet</td></tr>"}</table>'


def _failed_table(failed: Sequence[Mapping[str, Any]]) -> str:
    head = "<tr><th>Change</th><th>Run</th><th>User</th><th>Action</th><th>Error</th></tr>"
    rows = [
        f"<tr><td>{row['id']}</td><td>{row['run_id']}</td><td>{_esc(row['key'])}</td><td>{_esc(row['action'])}</td>"
        f"<td class=wrap>{_esc(row['error'])}</td></tr>"
        for row in failed
    ]
    return f'<table id="failed">{head}{"".join(rows) or "<tr><td colspan=5>none</td></tr>"}</table>'


def _held_plans(plans: Sequence[Mapping[str, Any]], csrf: str | None) -> str:
    """The open held plans, each with the people it would deactivate and why, and the approve/reject form."""
    if not plans:
        return '<p id="held-plans" class="muted">No held plans: nothing waits for an approval.</p>'
    return '<div id="held-plans">' + "".join(_held_plan(plan, csrf) for plan in plans) + "</div>"


def _held_plan(plan: Mapping[str, Any], csrf: str | None) -> str:
    people = plan["deactivations"]
    head = "<tr><th>Action</th><th>User</th><th>Person</th><th>Why</th></tr>"
    rows = "".join(
        f"<tr><td>{_esc(c['action'])}</td><td>{_esc(c['user_id'])}</td>"
        f"<td>{_esc(c['source'])} {_esc(c['external_id'])}</td><td class=wrap>{_esc(c['reason'])}</td></tr>"
        for c in people
    )
    status = plan["status"]
    decided = f" by {_esc(plan['decided_by'])}" if plan.get("decided_by") else ""
    note = f" ({_esc(plan['note'])})" if plan.get("note") else ""
    title = (
        f'<h3>Held plan {plan["id"]} <span class="held">{_esc(status)}</span>{decided}{note}</h3>'
        f'<div class="muted">held {_short(plan["held_at"])} by run {_esc(plan["run_id"])}, still held by run '
        f"{_esc(plan['last_run_id'])}; {len(people)} deactivation(s). {_esc(plan['reason'])}</div>"
    )
    table = f"<table>{head}{rows}</table>"
    return f'<div class="held-plan" id="held-plan-{plan["id"]}">{title}{table}{_decide(plan, csrf)}</div>'


def _decide(plan: Mapping[str, Any], csrf: str | None) -> str:
    """The form that approves or rejects a plan (POST /held/ID, with the session's CSRF token)."""
    status = plan["status"]
    if status == "approved":
        return '<p class="muted">Approved: the next run applies it if its inputs are unchanged.</p>'
    if csrf is None:
        return ""
    buttons = '<button type="submit" name="decision" value="approve">Approve</button>'
    if status == "held":
        buttons += ' <button type="submit" name="decision" value="reject">Reject</button>'
    return (
        f'<form method="post" action="/held/{plan["id"]}"><input type="hidden" name="csrf" value="{_esc(csrf)}">'
        '<input type="text" name="note" maxlength="500" size="50" placeholder="note for the audit log (who, why)"> '
        f"{buttons}</form>"
    )


def _conflicts_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Known conflicts: what syncd writes nothing for until the person's inputs change or a drift check runs."""
    head = "<tr><th>User</th><th>Person</th><th>Kind</th><th>Other</th><th>Since (UTC)</th><th>Why</th></tr>"
    rows_html = [
        f"<tr><td>{_esc(row['user_id'])}</td><td>{_esc(row['source'])} {_esc(row['external_id'])}</td>"
        f"<td>{_esc(row['kind'])}</td><td>{_esc(row['other'])}</td>"
        f"<td>{_esc((row['detected_at'] or '')[:19].replace('T', ' '))}</td>"
        f"<td class=wrap>{_esc(row['reason'])}</td></tr>"
        for row in rows
    ]
    return f'<table id="conflicts">{head}{"".join(rows_html) or "<tr><td colspan=6>none</td></tr>"}</table>'


def _login_form() -> str:
    return (
        '<form method="post" action="/login"><span class="muted">User ids and error texts are shown with the admin '
        'token:</span> <input type="password" name="token" placeholder="admin token" autocomplete="off"> '
        '<button type="submit">Show details</button></form>'
    )


def render_page(data: Mapping[str, Any]) -> str:
    """The status page as one self-contained HTML document."""
    detailed = bool(data.get("detailed"))
    # no refresh while a held plan waits for a decision: it would wipe a note being typed
    refresh = "" if data.get("held_plans") else '<meta http-equiv="refresh" content="30">'
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>syncd status</title>",
        f"{refresh}<style>{_STYLE}</style></head><body>",
        f'<h1>syncd</h1><div class="muted">status at {_esc(data["generated_at"])}'
        f"{' (details shown)' if detailed else ''}</div>",
        _cards(data),
    ]
    if detailed:  # first: what waits for a decision
        parts += ["<h2>Held plans</h2>", _held_plans(data.get("held_plans") or [], data.get("csrf"))]
    parts += [
        "<h2>Changes per run</h2>",
        _chart(data["runs"]),
        "<h2>Last runs</h2>",
        _runs_table(data["runs"]),
        "<h2>Sources</h2>",
        _sources_table(data["sources"], detailed=detailed),
    ]
    if detailed:
        parts += ["<h2>Known conflicts</h2>", _conflicts_table(data.get("conflict_rows") or [])]
        parts += ["<h2>Failed changes (latest)</h2>", _failed_table(data.get("failed_changes") or [])]
    elif data.get("admin_login", True):
        parts.append(_login_form())
    else:
        parts.append('<p class="muted">Set server.admin_token to see user ids and error texts here.</p>')
    footer = "Held plans are approved or rejected above; the rest is read-only" if detailed else "Read-only"
    parts.append(f'<p class="muted">{footer}. JSON: GET /status with the admin token.</p>')
    parts.append("</body></html>")
    return "".join(parts)
