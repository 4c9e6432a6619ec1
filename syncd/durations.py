"""Pure parsing of the durations the config uses: budget cycles, intervals and cron-or-interval schedules."""

from __future__ import annotations

import re

__all__ = ["MAX_BUDGET_DAYS", "budget_duration_for_litellm", "cron_problem", "parse_interval"]

_INTERVAL = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NAMED = {"hourly": "hourly", "daily": "daily", "weekly": "weekly", "monthly": "monthly", "yearly": "365d"}
_MONTHS = re.compile(r"^(\d+)mo$")
#: the longest budget cycle syncd sends. LiteLLM computes the next reset date in Python and refuses (400) one past
#: the year 9999: from 2026 that is about 2,912,000 days, one fewer every day (measured on 1.108.7: 2,910,000d is
#: accepted, 2,920,000d and 600000w refused). 400000w leaves centuries of margin.
MAX_BUDGET_DAYS = 2_800_000
_YEARS = re.compile(r"^(\d+)y$")


def parse_interval(text: str | int | float) -> float:
    """Seconds in an interval such as `30s`, `5m`, `1h`, `7d`, `2w` (a bare number is seconds)."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not an interval (use 30s, 5m, 1h, 7d)")
    if isinstance(text, int | float):
        if text <= 0:
            raise ValueError(f"{text!r} is not a positive interval")
        return float(text)
    match = _INTERVAL.match(str(text))
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not an interval (use 30s, 5m, 1h, 7d)")
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _bounded(value: str, seconds: int) -> str:
    if seconds > MAX_BUDGET_DAYS * 86400:
        raise ValueError(
            f"{value!r} is longer than LiteLLM can store (at most {MAX_BUDGET_DAYS} days, 400000w: its reset date "
            "must fall before the year 9999)"
        )
    return value


def budget_duration_for_litellm(text: str) -> str:
    """Translate a budget cycle into a value LiteLLM 1.108 accepts, or raise ValueError naming the problem.

    LiteLLM takes `Ns|m|h|d|w`, exactly `1mo`, and hourly/daily/weekly/monthly; it refuses `yearly`, `1y` and `2mo`.
    So yearly and `Ny` become `N*365d` and `Nmo` (N > 1) becomes `N*30d`.
    """
    value = str(text).strip().lower()
    if value in _NAMED:
        return _NAMED[value]
    if _INTERVAL.match(value) and int(value[:-1]) > 0:
        return _bounded(value, int(value[:-1]) * _UNIT_SECONDS[value[-1]])
    months = _MONTHS.match(value)
    if months and int(months.group(1)) > 0:
        count = int(months.group(1))
        return "1mo" if count == 1 else _bounded(f"{count * 30}d", count * 30 * 86400)
    years = _YEARS.match(value)
    if years and int(years.group(1)) > 0:
        days = int(years.group(1)) * 365
        return _bounded(f"{days}d", days * 86400)
    raise ValueError(f"{text!r} is not a duration (use daily, weekly, monthly, yearly, or 30d, 12h, 1mo)")


# -- cron: the five-field crontab the scheduler (APScheduler's CronTrigger.from_crontab) runs -----------------------
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("day_of_week", 0, 6))
_NUMBERS = re.compile(r"^(?:\*|(?P<first>\d+)(?:-(?P<last>\d+))?)(?:/(?P<step>\d+))?$")
_NAMES = re.compile(r"^(?P<first>[a-z]+)(?:-(?P<last>[a-z]+))?$", re.IGNORECASE)
_NAMED_VALUES = {
    "month": ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    "day_of_week": ("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
}


def cron_problem(schedule: str) -> str | None:
    """What makes `schedule` not a crontab the scheduler runs (None: it is one): five fields (minute hour day month
    day_of_week, the week from 0 = monday), each a list of `*`, `N`, `N-M`, with an optional `/step`, month and
    weekday names (`jan-mar`, `mon-fri`), and `last` for the day."""
    fields = schedule.split()
    if len(fields) != len(_CRON_FIELDS):
        return f"wrong number of fields; got {len(fields)}, expected 5"
    for text, (name, low, high) in zip(fields, _CRON_FIELDS, strict=True):
        for item in text.split(","):
            problem = _cron_item_problem(item.strip(), name, low, high)
            if problem is not None:
                return f"{name} {item!r}: {problem}"
    return None


def _cron_item_problem(item: str, name: str, low: int, high: int) -> str | None:
    if name == "day" and item.lower() == "last":
        return None
    match = _NUMBERS.match(item)
    if match is not None:
        first, last, step = (int(v) if v is not None else None for v in match.group("first", "last", "step"))
        if step == 0:
            return "the step must be higher than 0"
        if first is None:
            return f"the step is higher than the range ({high - low})" if step and step > high - low else None
        return _cron_range_problem(first, last if last is not None or step is not None else first, step, low, high)
    names = _NAMED_VALUES.get(name)
    match = _NAMES.match(item)
    if names is None or match is None:
        return "not a value, a range, a step or a name"
    first_name, last_name = (v.lower() if v else None for v in match.group("first", "last"))
    if first_name not in names or (last_name is not None and last_name not in names):
        return "an unknown name"
    offset = 1 if name == "month" else 0
    first = names.index(first_name) + offset
    return _cron_range_problem(first, None if last_name is None else names.index(last_name) + offset, None, low, high)


def _cron_range_problem(first: int, last: int | None, step: int | None, low: int, high: int) -> str | None:
    if last is not None and first > last:
        return "the first value is higher than the last"
    if first < low or (last is not None and last > high):
        return f"outside {low}-{high}"
    if step and step > (last or high) - first:
        return f"the step is higher than the range ({(last or high) - first})"
    return None
