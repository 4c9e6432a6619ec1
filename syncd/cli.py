"""The `syncd` command line: wires settings, store, sources and the LiteLLM client together for each command.

Exit status: 0 done (or nothing to do), 1 a run failed, 2 bad config or usage, 3 held by a safety guard.
`--json` prints one JSON document on stdout; logs always go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from syncd import __version__

__all__ = ["main"]

log = logging.getLogger("syncd")

EXIT_FAILED, EXIT_USAGE = 1, 2


class _Usage(Exception):
    """A problem the operator must fix before the command can run (exit 2)."""


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default=os.environ.get("SYNCD_CONFIG"),
        help="the YAML config file (default: $SYNCD_CONFIG)",
    )
    parser.add_argument("--log-level", default=os.environ.get("SYNCD_LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keep a LiteLLM proxy's users in step with SCIM identity providers and LDAP directories.",
        epilog="Exit status: 0 ok, 1 failed, 2 bad config or usage, 3 held by the deactivation guard.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sync = commands.add_parser("sync", help="pull the LDAP sources, then plan and apply once")
    _add_config(sync)
    sync.add_argument("--source", action="append", default=[], help="pull only this LDAP source (repeatable)")
    sync.add_argument("--dry-run", action="store_true", help="plan and print, change nothing")
    sync.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    sync.add_argument("--drift-check", action="store_true", help="re-read every managed user from LiteLLM first")
    sync.add_argument("--incremental", action="store_true", help="pull only what changed since the last pull")
    sync.add_argument(
        "--allow-mass-deactivation", action="store_true", help="override the deactivation guard for this run"
    )

    plan = commands.add_parser("plan", help="pull and plan, print the plan, change nothing")
    _add_config(plan)
    plan.add_argument("--source", action="append", default=[], help="pull only this LDAP source (repeatable)")
    plan.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    plan.add_argument("--drift-check", action="store_true", help="compare with every user LiteLLM holds")

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", help="apply the migrations in migrations/")
    _add_config(upgrade)

    serve = commands.add_parser("serve", help="HTTP server (SCIM, health, metrics, status) plus the scheduler")
    _add_config(serve)
    serve.add_argument("--migrate", action="store_true", help="apply the database migrations first")
    serve.add_argument("--host", help="listen address (default: server.host)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port)")
    serve.add_argument(
        "--wait-db", type=float, default=30.0, metavar="SECONDS", help="wait this long for the database at start"
    )

    check = commands.add_parser("check-config", help="validate the config, then try the database, LDAP and LiteLLM")
    _add_config(check)

    imp = commands.add_parser("import", help="record people and groups from a JSON or CSV file as one source")
    _add_config(imp)
    imp.add_argument("file", help="a .json or .csv file (see README)")
    imp.add_argument("--source", help="the source name (default: the file's own, else 'import')")
    imp.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    explain = commands.add_parser("explain", help="why a person gets what they get, and what would change it")
    _add_config(explain)
    explain.add_argument("user", help="a user_id, an email or a source's external id")
    explain.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    explain.add_argument("--offline", action="store_true", help="do not read LiteLLM")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status."""
    args = _parser().parse_args(argv)
    from syncd.logs import configure_logging

    configure_logging(args.log_level)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "serve": _serve,
        "sync": _sync,
        "plan": _plan,
        "db": _db,
        "check-config": _check_config,
        "import": _import,
        "explain": _explain,
    }
    try:
        return handlers[args.command](args)
    except _Usage as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("syncd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an outage met mid-run: one clear line, the details in the log
        message = _outage(exc)
        if message is None:
            raise
        log.error("%s", message, exc_info=exc)
        print(f"syncd: {message}", file=sys.stderr)
        return EXIT_FAILED


def _outage(exc: Exception) -> str | None:
    """A one-line description of a LiteLLM or database failure (None for anything else: a bug, shown in full)."""
    from sqlalchemy.exc import SQLAlchemyError

    from syncd.litellm import LiteLLMError

    if isinstance(exc, LiteLLMError):
        return f"LiteLLM failed ({exc.endpoint}): {exc}; nothing more was changed, the next run resumes"
    if isinstance(exc, SQLAlchemyError):
        return f"the database failed: {type(exc).__name__}: {_first_line(exc)}"
    return None


# -- wiring ---------------------------------------------------------------------------------------------------------
def _settings(args: argparse.Namespace) -> Any:
    from syncd.logs import redact, secrets_of
    from syncd.settings import ConfigError, load_settings

    if not args.config:
        raise _Usage("no config file: pass --config FILE or set SYNCD_CONFIG")
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        raise _Usage(str(exc)) from None
    redact(*secrets_of(settings))
    return settings


def _store(settings: Any, *, require_schema: bool = True) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from syncd.store import SchemaOutOfDate, make_engine, require_current_schema
    from syncd.store.repository import SyncStore

    engine = make_engine(settings.database.url)
    if require_schema:
        try:
            require_current_schema(engine)
        except SchemaOutOfDate as exc:
            raise _Usage(str(exc)) from None
        except SQLAlchemyError as exc:
            raise _Usage(f"cannot reach the database: {exc.__class__.__name__}: {_first_line(exc)}") from None
    return SyncStore(engine)


def _client(settings: Any) -> Any:
    from syncd.litellm import LiteLLMClient

    try:
        return LiteLLMClient.from_settings(settings.litellm)
    except ValueError as exc:
        raise _Usage(str(exc)) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, default=str, sort_keys=False)
        sys.stdout.write("\n")
    else:
        print(text)


# -- commands -------------------------------------------------------------------------------------------------------
def _pull(
    settings: Any, store: Any, names: list[str], *, record: bool, incremental: bool = False
) -> tuple[list[Any], list[str]]:
    """Pull the LDAP sources; record complete snapshots (sync) or return them (plan). Returns (snapshots, failed)."""
    from syncd.pull import UnknownSource, pull_sources

    try:
        return pull_sources(settings, store, names, record=record, incremental=incremental)
    except UnknownSource as exc:
        raise _Usage(str(exc)) from None


def _serve(args: argparse.Namespace) -> int:
    from syncd.serve import ServeError, serve

    settings = _settings(args)
    try:
        return serve(settings, migrate=args.migrate, host=args.host, port=args.port, wait_db_s=args.wait_db)
    except ServeError as exc:
        raise _Usage(str(exc)) from None


def _sync(args: argparse.Namespace) -> int:
    from syncd.plan import render_text
    from syncd.reconcile import ReconcileOptions, Reconciler

    settings = _settings(args)
    store = _store(settings)
    with _client(settings) as client:
        snapshots, failed = _pull(settings, store, args.source, record=not args.dry_run, incremental=args.incremental)
        options = ReconcileOptions(
            trigger="cli",
            dry_run=args.dry_run,
            allow_mass_deactivation=args.allow_mass_deactivation,
            drift_check=True if args.drift_check else None,
            failed_sources=tuple(failed),
            sources=tuple(args.source),
        )
        # the fresh full snapshots stand in for their sources' rows: the store is not read back for them (and a dry
        # run, which records nothing, still plans with what was pulled)
        report = Reconciler(settings, store, client).run(options, snapshots)
        del snapshots
    if failed and report.status == "dry_run":
        report.status = "failed"
    _emit(args, report.to_dict(), _report_text(report, render_text(report.plan)))
    return report.exit_code


def _report_text(report: Any, plan_text: str) -> str:
    lines = [plan_text]
    if report.applied is not None:
        applied = report.applied
        done = ", ".join(f"{n} {a}" for a, n in sorted(applied.by_action.items())) or "nothing"
        lines.append(f"Applied: {done}; {applied.failed} failed, {applied.skipped} skipped.")
        lines.extend(f"  failed {action} {user}: {error}" for user, action, error in applied.errors)
    teams = report.teams
    if teams is not None and teams.status != "nothing":
        from syncd.team_plan import render_team_text

        lines.append(render_team_text(teams.plan))
        if teams.applied is not None:
            done = ", ".join(f"{n} {a}" for a, n in sorted(teams.applied.by_action.items())) or "nothing"
            lines.append(f"Teams applied: {done}; {teams.applied.failed} failed, {teams.applied.skipped} skipped.")
            lines.extend(
                f"  failed {action} {alias} {user or ''}: {error}"
                for alias, user, action, error in teams.applied.errors
            )
    lines.extend(f"problem: {p}" for p in report.problems if p not in report.plan.problems)
    lines.append(
        f"Run {report.run_id or '-'}: {report.status} in {report.seconds:.2f}s"
        + (" (drift check)" if report.drift_checked else "")
    )
    return "\n".join(lines)


def _plan(args: argparse.Namespace) -> int:
    from syncd.plan import render_json, render_text
    from syncd.reconcile import Reconciler
    from syncd.team_plan import render_team_json, render_team_text
    from syncd.team_reconcile import TeamReconciler, users_brought_in

    settings = _settings(args)
    store = _store(settings)
    with _client(settings) as client:
        snapshots, failed = _pull(settings, store, args.source, record=False)
        reconciler = Reconciler(settings, store, client)
        plan, _ = reconciler.plan(snapshots=snapshots, drift_check=args.drift_check)
        teams = TeamReconciler(settings, store, client)
        desired = reconciler.desired(snapshots)
        team_plan, _ = teams.plan(desired.users, pending_users=users_brought_in(plan), held=desired.held)
    data = render_json(plan) | {"teams": render_team_json(team_plan), "failed_sources": failed}
    text = render_text(plan)
    if team_plan.changes or team_plan.problems:
        text += "\n" + render_team_text(team_plan)
    text += "".join(f"\nproblem: source {name}: pull failed" for name in failed)
    _emit(args, data, text)
    return 0


def _db(args: argparse.Namespace) -> int:
    from syncd.store import make_engine, schema_revision, upgrade

    settings = _settings(args)
    engine = make_engine(settings.database.url)
    before, head = schema_revision(engine)
    upgrade(engine)
    print(f"database schema: {before or 'empty'} -> {head}" if before != head else f"database schema at {head}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from syncd.sources.importer import ImportFileError, read_import_file
    from syncd.store.repository import IncompleteSnapshot

    settings = _settings(args)
    store = _store(settings)
    try:
        snapshot = read_import_file(args.file, source=args.source)
        result = store.record_snapshot(snapshot)
    except (ImportFileError, IncompleteSnapshot) as exc:
        raise _Usage(str(exc)) from None
    data = {
        "source": snapshot.source,
        "users": len(snapshot.identities),
        "groups": len(snapshot.groups),
        "identities_added": result.identities_added,
        "identities_updated": result.identities_updated,
        "identities_removed": result.identities_removed,
        "memberships_added": result.memberships_added,
        "memberships_removed": result.memberships_removed,
    }
    text = (
        f"Imported {data['users']} users and {data['groups']} groups into source {snapshot.source}: "
        f"{result.identities_added} added, {result.identities_updated} updated, {result.identities_removed} removed; "
        f"memberships +{result.memberships_added} -{result.memberships_removed}."
    )
    _emit(args, data, text)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from syncd.checks import run_checks

    settings = _settings(args)
    results = run_checks(settings)
    for result in results:
        print(f"{'ok  ' if result.ok else ('warn' if result.warning else 'FAIL')}  {result.what}: {result.detail}")
    failures = [r for r in results if not r.ok and not r.warning]
    print("config OK" if not failures else f"{len(failures)} problem(s)")
    return 0 if not failures else EXIT_USAGE


def _explain(args: argparse.Namespace) -> int:
    from syncd.explain import UnknownPerson, explain, render_explanation

    settings = _settings(args)
    store = _store(settings)
    try:
        if args.offline:
            data = explain(settings, store, None, args.user)
        else:
            with _client(settings) as client:
                data = explain(settings, store, client, args.user)
    except UnknownPerson as exc:
        raise _Usage(str(exc)) from None
    _emit(args, data, render_explanation(data))
    return 0
