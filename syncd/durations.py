"""Pure parsing of the durations the config uses: budget cycles, intervals and cron-or-interval schedules."""

from __future__ import annotations

import re

__all__ = ["MAX_BUDGET_DAYS", "budget_duration_for_litellm", "parse_interval"]

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
