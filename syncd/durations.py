"""Pure parsing of the durations the config uses: budget cycles, intervals and cron-or-interval schedules."""

from __future__ import annotations

import re

__all__ = ["budget_duration_for_litellm", "parse_interval"]

_INTERVAL = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NAMED = {"hourly": "hourly", "daily": "daily", "weekly": "weekly", "monthly": "monthly", "yearly": "365d"}
_MONTHS = re.compile(r"^(\d+)mo$")
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


def budget_duration_for_litellm(text: str) -> str:
    """Translate a budget cycle into a value LiteLLM 1.108 accepts, or raise ValueError naming the problem.

    LiteLLM takes `Ns|m|h|d|w`, exactly `1mo`, and hourly/daily/weekly/monthly; it refuses `yearly`, `1y` and `2mo`.
    So yearly and `Ny` become `N*365d` and `Nmo` (N > 1) becomes `N*30d`.
    """
    value = str(text).strip().lower()
    if value in _NAMED:
        return _NAMED[value]
    if _INTERVAL.match(value) and int(value[:-1]) > 0:
        return value
    months = _MONTHS.match(value)
    if months and int(months.group(1)) > 0:
        count = int(months.group(1))
        return "1mo" if count == 1 else f"{count * 30}d"
    years = _YEARS.match(value)
    if years and int(years.group(1)) > 0:
        return f"{int(years.group(1)) * 365}d"
    raise ValueError(f"{text!r} is not a duration (use daily, weekly, monthly, yearly, or 30d, 12h, 1mo)")
