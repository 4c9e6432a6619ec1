"""The config's cron check is syncd's own (the config layer imports no scheduler library), and agrees with the
scheduler that runs the schedules: APScheduler's CronTrigger.from_crontab accepts exactly what it accepts."""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.durations import cron_problem

_number = st.integers(0, 70).map(str)
_name = st.sampled_from(["jan", "Mar", "dec", "foo", "mon", "FRI", "sun"])
_item = st.one_of(
    st.just("*"),
    _number,
    st.builds(lambda a, b: f"{a}-{b}", _number, _number),
    st.builds(lambda a, b, k: f"{a}-{b}/{k}", _number, _number, _number),
    st.builds(lambda a, k: f"{a}/{k}", _number, _number),
    st.builds(lambda k: f"*/{k}", _number),
    _name,
    st.builds(lambda a, b: f"{a}-{b}", _name, _name),
    st.sampled_from(["last", "x", "", "1-", "-1"]),
)
_field = st.lists(_item, min_size=1, max_size=3).map(",".join)


def _scheduler_accepts(schedule: str) -> bool:
    try:
        CronTrigger.from_crontab(schedule)
    except ValueError:
        return False
    return True


@settings(max_examples=2000, deadline=None)
@given(st.lists(_field, min_size=4, max_size=6).map(" ".join))
def test_the_cron_check_accepts_exactly_what_the_scheduler_runs(schedule: str) -> None:
    assert (cron_problem(schedule) is None) == _scheduler_accepts(schedule), (schedule, cron_problem(schedule))


def test_a_bad_cron_names_its_field() -> None:
    assert cron_problem("0 25 * * *") == "hour '25': outside 0-23"
    assert cron_problem("0 3 * * mon-fri") is None and cron_problem("*/15 * last jan-mar 0") is None
    assert cron_problem("0 3 * *") == "wrong number of fields; got 4, expected 5"
