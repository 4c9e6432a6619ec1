"""The `syncd` command line: wires settings, store, sources and the LiteLLM client together for each command.

Exit status: 0 done (or nothing to do), 1 a run failed, 2 bad config or usage, 3 held by a safety guard.
`--json` prints one JSON document on stdout; logs always go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.util import find_spec
from typing import Any, NoReturn

from syncd import __version__
from syncd.logs import LEVELS

__all__ = ["main"]

log = logging.getLogger("syncd")

EXIT_FAILED, EXIT_USAGE = 1, 2
_NOTIFY_FLUSH_S = 5.0  # how long `sync` waits at its end for the webhooks to take its notifications


class _Usage(Exception):
    """A problem the operator must fix before the command can run (exit 2)."""


class _Unreachable(Exception):
    """A server the command needs cannot be reached (exit 1: try again later)."""


class _Parser(argparse.ArgumentParser):
    """argparse, telling a bad command line in one line on stderr (exit 2) instead of the usage and the error."""

    def error(self, message: str) -> NoReturn:
        """Exit 2 with `syncd: <the problem> (see <prog> --help)`."""
        self.exit(EXIT_USAGE, f"syncd: {message} (see {self.prog} --help)\n")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default=os.environ.get("SYNCD_CONFIG"),
        help="the YAML config file (default: $SYNCD_CONFIG)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LEVELS,
        default=None,
        help="DEBUG, INFO, WARNING or ERROR (default: $SYNCD_LOG_LEVEL, else INFO)",
    )
    _add_debug(parser, default=argparse.SUPPRESS)


def _add_debug(parser: argparse.ArgumentParser, *, default: Any) -> None:
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show the traceback of a failure (for bug reports)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="syncd",
        description="Keep a LiteLLM proxy's users in step with SCIM identity providers and LDAP directories.",
        epilog="Exit status: 0 ok, 1 failed (a server unreachable, a change refused), 2 bad config or usage, "
        "3 held by the deactivation guard. Environment: SYNCD_CONFIG, SYNCD_LOG_LEVEL, SYNCD_LOG_FORMAT "
        "(json or text), SYNCD_MIGRATIONS.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    _add_debug(parser, default=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sync = commands.add_parser("sync", help="pull the LDAP sources, then plan and apply once")
    _add_common(sync)
    sync.add_argument("--source", action="append", default=[], help="pull only this LDAP source (repeatable)")
    sync.add_argument("--dry-run", action="store_true", help="plan and print, change nothing")
    sync.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    sync.add_argument("--drift-check", action="store_true", help="re-read every managed user from LiteLLM first")
    sync.add_argument("--incremental", action="store_true", help="pull only what changed since the last pull")
    sync.add_argument(
        "--allow-mass-deactivation", action="store_true", help="override the deactivation guard for this run"
    )
    sync.add_argument(
        "--fail-on-conflict",
        action="store_true",
        help="exit 1 when there are known conflicts (without it they are reported and the run exits 0)",
    )

    plan = commands.add_parser("plan", help="pull and plan, print the plan, change nothing")
    _add_common(plan)
    plan.add_argument("--source", action="append", default=[], help="pull only this LDAP source (repeatable)")
    plan.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    plan.add_argument("--drift-check", action="store_true", help="compare with every user LiteLLM holds")

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", help="apply the migrations shipped with syncd")
    _add_common(upgrade)

    serve = commands.add_parser("serve", help="HTTP server (SCIM, health, metrics, status) plus the scheduler")
    _add_common(serve)
    serve.add_argument("--migrate", action="store_true", help="apply the database migrations first")
    serve.add_argument("--host", help="listen address (default: server.host)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port)")
    serve.add_argument(
        "--wait-db", type=float, default=30.0, metavar="SECONDS", help="wait this long for the database at start"
    )

    check = commands.add_parser(
        "check-config",
        help="validate the config, say what each mapping matches, then try the database, LDAP and LiteLLM",
    )
    _add_common(check)

    imp = commands.add_parser("import", help="record people and groups from a JSON or CSV file as one source")
    _add_common(imp)
    imp.add_argument("file", help="a .json or .csv file (see README)")
    imp.add_argument("--source", help="the source name (default: the file's own, else 'import')")
    imp.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    release = commands.add_parser(
        "release",
        help="forget the binding of a LiteLLM user_id to its person, so that the person the source now names so "
        "gets it at the next sync (the leaver's blocked keys stay blocked)",
    )
    _add_common(release)
    release.add_argument("user_id", help="the bound LiteLLM user_id")

    hashing = commands.add_parser(
        "hash-secret",
        help="read an OAuth client secret on stdin, print its scrypt hash for scim.oauth_clients[].secret_hashes",
        description="Read one OAuth client secret from standard input (a prompt without echo on a terminal) and "
        "print its scrypt hash, for scim.oauth_clients[].secret_hashes. The secret itself is never printed. Make "
        "one with: openssl rand -hex 32",
    )
    _add_debug(hashing, default=argparse.SUPPRESS)
    approve = commands.add_parser(
        "approve",
        help="approve a plan held by the deactivation guard and apply it now, exactly, if its inputs are unchanged "
        "(else it is re-planned and held again: exit 1)",
    )
    _add_common(approve)
    approve.add_argument("plan_id", type=int, metavar="ID", help="the held plan's id (status page, syncd sync)")
    approve.add_argument("--note", help="who approves and why; written to the audit log (default: the OS user)")
    approve.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    reject = commands.add_parser(
        "reject", help="reject a held plan: its deactivations stay held until the source changes them"
    )
    _add_common(reject)
    reject.add_argument("plan_id", type=int, metavar="ID", help="the held plan's id")
    reject.add_argument("--note", help="who rejects and why; written to the audit log (default: the OS user)")

    explain = commands.add_parser("explain", help="why a person gets what they get, and what would change it")
    _add_common(explain)
    explain.add_argument("user", help="a user_id, an email or a source's external id")
    explain.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    explain.add_argument("--offline", action="store_true", help="do not read LiteLLM (needs no secret)")
    return parser


def _logging_options(args: argparse.Namespace) -> tuple[str, bool | None]:
    """The log level and format from the command line, else the environment; a bad value is a usage error."""
    level = getattr(args, "log_level", None) or os.environ.get("SYNCD_LOG_LEVEL", "").strip().upper() or "INFO"
    if level not in LEVELS:
        raise _Usage(f"SYNCD_LOG_LEVEL={level.lower()!r} is not one of {', '.join(LEVELS)}")
    form = os.environ.get("SYNCD_LOG_FORMAT", "").strip().lower()
    if form not in ("", "json", "text"):
        raise _Usage(f"SYNCD_LOG_FORMAT={form!r} is not json or text")
    return level, None if not form else form == "json"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status. Every expected failure is one line on stderr."""
    args = _parser().parse_args(argv)
    from syncd.logs import configure_logging

    try:
        level, json_format = _logging_options(args)
    except _Usage as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(level, json_format=json_format, debug=args.debug)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "serve": _serve,
        "sync": _sync,
        "plan": _plan,
        "db": _db,
        "check-config": _check_config,
        "import": _import,
        "explain": _explain,
        "release": _release,
        "hash-secret": _hash_secret,
        "approve": _approve,
        "reject": _reject,
    }
    try:
        return handlers[args.command](args)
    except _Usage as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _Unreachable as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("syncd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an outage met mid-run (or a bug): one clear line; the traceback only with --debug
        code, message = _failure(exc, args.command)
        if args.debug:
            log.error("%s", message, exc_info=exc)
        print(f"syncd: {message}", file=sys.stderr)
        return code


def _failure(exc: Exception, command: str) -> tuple[int, str]:
    """(exit status, one line) for an exception that ended a command."""
    from sqlalchemy.exc import SQLAlchemyError

    from syncd.litellm import LiteLLMError
    from syncd.logs import one_line
    from syncd.store import DatabaseDriverMissing

    if isinstance(exc, LiteLLMError):
        after = "; nothing more was changed, the next run resumes" if command == "sync" else ""
        return EXIT_FAILED, f"LiteLLM failed ({exc.endpoint}): {_first_line(exc)}{after}"
    if isinstance(exc, DatabaseDriverMissing):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, SQLAlchemyError):
        return EXIT_FAILED, f"the database failed: {one_line(exc)}"
    return EXIT_FAILED, f"unexpected error: {one_line(exc)} (run with --debug for the traceback, and report it)"


# -- wiring ---------------------------------------------------------------------------------------------------------
def _settings(args: argparse.Namespace, *, secrets: bool = True) -> Any:
    from syncd.logs import redact, secrets_of
    from syncd.settings import ConfigError, load_settings

    if not args.config:
        raise _Usage("no config file: pass --config FILE or set SYNCD_CONFIG")
    try:
        settings = load_settings(args.config, secrets=secrets)
    except ConfigError as exc:
        raise _Usage(str(exc)) from None
    redact(*secrets_of(settings))
    if settings.ldap and secrets and find_spec("ldap3") is None:
        raise _Usage("the config has ldap: sources but ldap3 is not installed: pip install 'syncd[ldap]'")
    return settings


def _engine(settings: Any) -> Any:
    """The store's engine; a SQLite file that does not exist yet is not created (only `db upgrade` creates it)."""
    from syncd.store import DatabaseDriverMissing, make_engine, sqlite_file

    path = sqlite_file(settings.database.url)
    if path is not None and not path.exists():
        raise _Usage(f"the database {path} does not exist yet: run `syncd db upgrade --config FILE`")
    try:
        return make_engine(settings.database.url)
    except DatabaseDriverMissing as exc:
        raise _Usage(str(exc)) from None


def _store(settings: Any, *, require_schema: bool = True) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from syncd.logs import one_line
    from syncd.store import SchemaOutOfDate, require_current_schema
    from syncd.store.repository import SyncStore

    engine = _engine(settings)
    if require_schema:
        try:
            require_current_schema(engine)
        except SchemaOutOfDate as exc:
            raise _Usage(str(exc)) from None
        except SQLAlchemyError as exc:
            raise _Unreachable(f"cannot reach the database: {one_line(exc)}") from None
    return SyncStore(engine)


def _client(settings: Any) -> Any:
    from syncd.litellm import LiteLLMClient

    try:
        return LiteLLMClient.from_settings(settings.litellm)
    except ValueError as exc:
        raise _Usage(str(exc)) from None


def _first_line(exc: BaseException) -> str:
    from syncd.logs import scrub

    return scrub((str(exc).strip().splitlines() or [""])[0])


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
            fail_on_conflict=args.fail_on_conflict,
        )
        # the fresh full snapshots stand in for their sources' rows: the store is not read back for them (and a dry
        # run, which records nothing, still plans with what was pulled)
        with _notifying(settings, store, options) as watch:
            report = Reconciler(settings, store, client).run(options, snapshots)
            watch(report)
        del snapshots
    if failed and report.status == "dry_run":
        report.status = "failed"
    _emit(args, report.to_dict(), _report_text(report, render_text(report.plan)))
    return report.exit_code


@contextlib.contextmanager
def _notifying(settings: Any, store: Any, options: Any) -> Iterator[Callable[[Any], None]]:
    """Tell the webhooks of `notify:` what this run did (nothing for a dry run); at the end, wait at most
    _NOTIFY_FLUSH_S for them to take the notifications."""
    from syncd.notify import Notifier
    from syncd.run_events import RunWatch

    notifier = None if options.dry_run else Notifier.from_settings(settings.notify)
    if notifier is None:
        yield lambda _report: None
        return
    watch = RunWatch(notifier, store)
    watch.before_run(options.trigger)
    try:
        yield watch.after_run
    except Exception as exc:
        watch.raised(exc)
        raise
    finally:
        notifier.close(_NOTIFY_FLUSH_S)


def _report_text(report: Any, plan_text: str) -> str:
    lines = [plan_text]
    if report.applied is not None:
        applied = report.applied
        done = ", ".join(f"{n} {a}" for a, n in sorted(applied.by_action.items())) or "nothing"
        lines.append(f"Applied: {done}; {applied.failed} failed, {applied.skipped} skipped.")
        lines.extend(f"  failed {action} {user}: {error}" for user, action, error in applied.errors)
        lines.extend(f"  conflict {c.user_id}: {c.reason}" for c in applied.conflicts)
    if report.conflicts:
        lines.append(
            f"{len(report.conflicts)} known conflict(s), nothing written for them"
            + (" (--fail-on-conflict: exit 1)" if report.fail_on_conflict else "")
        )
    holding = report.holding
    if holding is not None and holding.held and holding.plan_id is not None:
        lines.append(
            f"Held plan {holding.plan_id}: {len(holding.held)} deactivation(s) wait, the rest was applied. "
            f"Approve with `syncd approve {holding.plan_id}`, or reject with `syncd reject {holding.plan_id}`."
        )
    if holding is not None and holding.approved_id is not None:
        lines.append(f"Approved held plan {holding.approved_id} applied.")
    lines.extend(f"problem: {p}" for p in report.problems if p not in report.plan.problems)
    lines.append(
        f"Run {report.run_id or '-'}: {report.status} in {report.seconds:.2f}s"
        + (" (drift check)" if report.drift_checked else "")
    )
    return "\n".join(lines)


def _plan(args: argparse.Namespace) -> int:
    from syncd.plan import render_json, render_text
    from syncd.reconcile import Reconciler

    settings = _settings(args)
    store = _store(settings)
    with _client(settings) as client:
        snapshots, failed = _pull(settings, store, args.source, record=False)
        plan, _ = Reconciler(settings, store, client).plan(snapshots=snapshots, drift_check=args.drift_check)
    data = render_json(plan) | {"failed_sources": failed}
    text = render_text(plan) + "".join(f"\nproblem: source {name}: pull failed" for name in failed)
    _emit(args, data, text)
    return EXIT_FAILED if failed else 0


def _release(args: argparse.Namespace) -> int:
    settings = _settings(args, secrets=False)  # a binding is the store's alone: no LiteLLM key, no bind password
    store = _store(settings)
    record = store.release_binding(args.user_id)
    if record is None:
        print(f"syncd: no binding for user_id {args.user_id}", file=sys.stderr)
        return 1
    print(
        f"released {args.user_id} (was bound to {record.source} {record.external_id}, {record.state}); "
        "at the next sync the person the source names so takes this LiteLLM user over, its blocked keys stay blocked"
    )
    return 0


def _decider(args: argparse.Namespace) -> str:
    """Who decides about a held plan from the command line: the OS user (the note says more, if given)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a container)
        return f"cli:uid {os.getuid()}"


def _decide(args: argparse.Namespace, decision: str, store: Any) -> Any:
    from syncd.store.repository import NotDecidable

    try:
        return store.decide_held_plan(args.plan_id, decision, by=_decider(args), note=args.note)
    except NotDecidable as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return None


def _approve(args: argparse.Namespace) -> int:
    from syncd.plan import render_text
    from syncd.reconcile import ReconcileOptions, Reconciler

    settings = _settings(args)
    store = _store(settings)
    if _decide(args, "approved", store) is None:
        return EXIT_FAILED
    options = ReconcileOptions(trigger="approve")
    # the store's record as it is: nothing pulled, so the inputs are those held; a plan held again is told
    with _client(settings) as client, _notifying(settings, store, options) as watch:
        report = Reconciler(settings, store, client).run(options)
        watch(report)
    plan = store.held_plan(args.plan_id)
    applied = plan is not None and plan.status == "applied"
    if applied:
        outcome = f"held plan {args.plan_id} approved and applied in run {report.run_id}"
    else:
        holding = report.holding
        again = holding.plan_id if holding is not None and holding.held else None
        outcome = f"held plan {args.plan_id} was not applied: its inputs changed since it was held; re-planned" + (
            f", held again as plan {again}" if again is not None else ", nothing held now"
        )
    data = report.to_dict() | {"approved": args.plan_id, "applied": applied, "outcome": outcome}
    _emit(args, data, _report_text(report, render_text(report.plan)) + "\n" + outcome)
    if not applied:
        print(f"syncd: {outcome}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if report.exit_code == EXIT_FAILED else 0


def _reject(args: argparse.Namespace) -> int:
    settings = _settings(args, secrets=False)  # a decision is the store's alone
    plan = _decide(args, "rejected", _store(settings))
    if plan is None:
        return EXIT_FAILED
    print(
        f"held plan {plan.id} rejected: its {len(plan.changes)} deactivation(s) stay held until the source changes "
        "them (then the new plan is held, or applied if within the limits)"
    )
    return 0


def _db(args: argparse.Namespace) -> int:
    from syncd.store import DatabaseDriverMissing, make_engine, schema_revision, upgrade

    settings = _settings(args, secrets=False)  # the schema needs no LiteLLM key, no bind password
    try:
        engine = make_engine(settings.database.url)
    except DatabaseDriverMissing as exc:
        raise _Usage(str(exc)) from None
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


def _hash_secret(args: argparse.Namespace) -> int:
    from syncd.secret_hash import hash_secret
    from syncd.settings._base import is_placeholder

    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass("client secret: ")
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    if not secret.strip() or is_placeholder(secret):
        raise _Usage("the secret on stdin is empty or an example value: make one with `openssl rand -hex 32`")
    if len(secret.encode()) < 32:
        print("syncd: warning: the secret is shorter than 32 bytes; use a long random one", file=sys.stderr)
    print(hash_secret(secret))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from syncd.explain import UnknownPerson, explain, render_explanation

    settings = _settings(args, secrets=not args.offline)  # offline: no LiteLLM key, no bind password needed
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
