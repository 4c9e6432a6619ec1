"""`syncd serve` with an LDAP source and no `schedule:`: the default schedule, logged at start, pulls at once; a run
that fails because LiteLLM is away is one log line per try, with the next try's time, and no traceback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from _daemon import SYNC_PASSWORD, Directory, Slapd, Syncd, base_config, free_port, wait_for, with_directory


def test_a_source_without_schedule_is_pulled_on_the_default_one_and_failed_tries_are_one_line(
    tmp_path: Any, slapd: Slapd, directory: Directory, launch: Callable[..., Syncd]
) -> None:
    alice = directory.add_user("alice")
    directory.add_group("engineers", [alice])
    config = base_config(f"sqlite:///{tmp_path}/syncd.db", f"http://127.0.0.1:{free_port()}")  # LiteLLM away
    config["litellm"]["max_retries"] = 0
    source = {
        "name": "corp",
        "url": slapd.url,
        "bind_dn": f"cn=syncd,{directory.base.split(',', 1)[1]}",
        "bind_password": SYNC_PASSWORD,
        "users": {"base_dn": f"ou=people,{directory.base}"},
        "groups": {"base_dn": f"ou=groups,{directory.base}"},
    }
    with_directory(config, source)
    syncd = launch(config, args=("--migrate",))
    syncd.wait_healthy()

    def pulled_and_failed() -> list[dict[str, Any]]:
        events = syncd.log_events()
        pulled = any(e["msg"] == "scheduled pull done" for e in events)
        return [e for e in events if "next try in" in e["msg"]] if pulled else []

    (failed, *_) = wait_for(pulled_and_failed, 30, "the pull at start, and a failed run logged with its next try")
    events = syncd.log_events()  # every line of stderr is one whole JSON event
    schedule = next(e for e in events if e["msg"].startswith("scheduled pulls:"))
    assert schedule["source"] == "corp"
    assert schedule["msg"] == (
        "scheduled pulls: full '0 */6 * * *', incremental every 300 s "
        "(the default schedule: the source sets no schedule)"
    )
    assert any(e["msg"] == "scheduled pull done" and e.get("outcome") == "success" for e in events)
    assert failed["level"] == "error" and "; 1 failed in a row, next try in 30 s at " in failed["msg"]
    assert failed["msg"].startswith(("reconcile failed: ", "run "))
    next_try = datetime.fromisoformat(failed["next_try_at"])
    logged = datetime.fromisoformat(failed["ts"])
    assert 25 <= (next_try - logged.astimezone(UTC)).total_seconds() <= 35
    assert "Traceback" not in syncd.logs() and not any("exception" in e for e in events)
