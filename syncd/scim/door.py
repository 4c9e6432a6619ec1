"""What a SCIM request may carry, checked before anything else reads it.

JSON nested at most `MAX_DEPTH` levels; text that is UTF-8 without a lone surrogate or a NUL (PostgreSQL holds
neither); integers within 64 bits and numbers finite; a filter of at most `MAX_FILTER_TERMS` conditions. Each
refusal is a SCIM 400 naming the problem, the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import math
from typing import Any

from scim2_models import InvalidSyntaxException, InvalidValueException

__all__ = ["MAX_DEPTH", "MAX_INTEGER", "check_text", "check_value", "parse_json"]

#: SCIM resources nest four or five levels (a PatchOp's value holding members); 32 leaves room for extensions
MAX_DEPTH = 32
#: the largest integer any column, or LiteLLM, holds (a BIGINT)
MAX_INTEGER = 2**63 - 1


class _OutOfRange(ValueError):
    """A number the store cannot hold."""


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > 19 or abs(number := int(text)) > MAX_INTEGER:
        raise _OutOfRange(f"the integer {text[:30]}{'...' if len(text) > 30 else ''} is outside 64 bits")
    return number


def _decimal(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _OutOfRange(f"the number {text[:30]} is out of range")
    return number


def _constant(text: str) -> Any:
    raise _OutOfRange(f"{text} is not a JSON number")


def parse_json(raw: bytes) -> Any:
    """The request body as JSON (None when empty), or invalidSyntax / invalidValue naming what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSyntaxException(detail=f"the body is not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        return None
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_decimal, parse_constant=_constant)
    except RecursionError:
        raise InvalidValueException(detail=f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except _OutOfRange as exc:
        raise InvalidValueException(detail=str(exc)) from None
    except ValueError:
        raise InvalidSyntaxException(detail="the body is not valid JSON") from None
    check_value(value)
    return value


def check_value(value: Any) -> None:
    """Refuse JSON nested too deep, or holding text the store cannot keep (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            check_text(node, "a string in the body")
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise InvalidValueException(detail=f"the body is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            for key, item in node.items():
                check_text(key, "a key in the body")
                stack.append((item, depth + 1))
        else:
            stack.extend((item, depth + 1) for item in node)


def check_text(text: str, what: str) -> None:
    """Refuse text holding a NUL or a lone surrogate (neither can be stored, nor encoded as UTF-8)."""
    if "\x00" in text:
        raise InvalidValueException(detail=f"{what} holds a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValueException(detail=f"{what} holds a lone surrogate (not valid Unicode)") from None
