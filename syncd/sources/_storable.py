"""What the store can hold of a directory entry: one check, the same limits on SQLite and on PostgreSQL.

PostgreSQL refuses a value longer than its column or holding a NUL, where SQLite would store it: an entry that
breaks a limit is skipped (and named) at the source, so that one odd entry never fails a whole pull, and both
databases sync the same people. The limits are the column sizes of syncd/store/tables.py (a test keeps them equal).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["GROUP_LIMITS", "USER_LIMITS", "unstorable"]

#: what an identity keeps, by field: the most characters the store holds
USER_LIMITS = {"external_id": 255, "user_id": 255, "email": 320, "display_name": 500}
#: what a group keeps
GROUP_LIMITS = {"external_id": 255, "name": 500}
#: fields only shown to people: bytes that are not UTF-8 are replaced there, as everywhere a value is shown
_SHOWN_ONLY = {"display_name"}


def unstorable(values: Iterable[tuple[str, str, bytes | None]], limits: dict[str, int]) -> str | None:
    """Why the store cannot hold an entry's values, naming the attribute, or None when it can.

    `values` are (field, attribute, raw value) triples; a field without a limit is checked for encoding and NUL
    only (a DN, say). A display name that is not UTF-8 is not a reason to skip (it is shown with replacements).
    """
    for name, attribute, raw in values:
        if raw is None:
            continue
        try:
            text = raw.decode("utf-8", "replace" if name in _SHOWN_ONLY else "strict")
        except UnicodeDecodeError:
            return f"{attribute} is not valid UTF-8"
        if "\x00" in text:
            return f"{attribute} contains a NUL character"
        limit = limits.get(name)
        if limit is not None and len(text) > limit:
            return f"{attribute} has {len(text)} characters, more than the store holds ({limit})"
    return None
