"""SCIM filters (RFC 7644 §3.4.2.2) into the store's neutral `Criterion` tree, and sortBy into a `Sort`.

scim2-models parses the text (the whole grammar, plus Entra's `emails[type eq "work"].value eq "x"`); every
attribute path is then resolved against the published schemas and every value put in comparison form. An attribute
that cannot be resolved is an `invalidFilter` error, never dropped, so `not (title eq "y")` means what it says.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

from scim2_models import InvalidFilterException, ScimFilter
from scim2_models.path import AttrPath, CompareOperator, Comparison, FilterNode, LogicalExpr, ValuePath
from scim2_models.path import Not as NotNode
from scim2_models.path import Present as PresentNode

from syncd.scim.schemas import Attribute, ResourceKind
from syncd.store.scim import And, Compare, Const, Criterion, Item, Not, Or, Present, Sort, name_key
from syncd.store.scim_filter import merged_terms

__all__ = ["MAX_FILTER_DEPTH", "MAX_FILTER_TERMS", "comparison_key", "parse_filter", "parse_sort"]

#: the most conditions a filter may hold (an `or` of `eq` on one attribute counts once): each other condition is one
#: more subquery per row, and identity providers send one or two
MAX_FILTER_TERMS = 50
#: how deep `and`, `or`, `not` and value filters may nest
MAX_FILTER_DEPTH = 16

_ORDERING = {"gt", "ge", "lt", "le"}
_SIMPLE = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s+[eE][qQ]\s+("(?:[^"\\\x00-\x1f]|\\["\\/bfnrtu])*")\s*')
_SUBSTRING = {"co", "sw", "ew"}
_UNINDEXED = {"binary"}
#: the paths compared through their columns, and how: the rest are indexed values of users
_COLUMN_PATHS = {"id", "username", "externalid", "active", "meta.created", "meta.lastmodified", "displayname"}


def comparison_key(value: str, case_exact: bool) -> str:
    """The form a string is compared in: NFC, and lower-cased unless the attribute is caseExact."""
    normalized = unicodedata.normalize("NFC", value)
    return normalized if case_exact else unicodedata.normalize("NFC", normalized.lower())


def parse_filter(
    text: str | None, kind: ResourceKind, *, lenient: bool = False, unknown: set[str] | None = None
) -> Criterion:
    """The criterion a SCIM filter describes for `kind`; `lenient` reads an unknown attribute as false.

    When lenient, the unknown attribute paths are added to `unknown` (a search over several types refuses the
    attributes none of them has).

    Raises InvalidFilterException on a syntax error, an unknown attribute (unless lenient), an operator the
    attribute's type does not take or a value of the wrong type.
    """
    if text is None or not text.strip():
        return Const(True)
    # the lookups identity providers repeat all day (userName eq "x") need no full parse
    tree = _simple_equality(text) or _parsed(text)
    translator = _Translator(kind, lenient)
    try:
        criterion = translator.node(tree, None)
    except RecursionError:
        raise InvalidFilterException(detail="the filter is nested too deep") from None
    terms, depth = _conditions(criterion)
    if terms > MAX_FILTER_TERMS:
        raise InvalidFilterException(detail=f"the filter holds {terms} conditions, over {MAX_FILTER_TERMS}")
    if depth > MAX_FILTER_DEPTH:
        raise InvalidFilterException(detail=f"the filter nests deeper than {MAX_FILTER_DEPTH} levels")
    if unknown is not None:
        unknown.update(translator.unknown)
    return criterion


def _conditions(criterion: Criterion) -> tuple[int, int]:
    """(how many conditions the store evaluates for `criterion`, how deep they nest), walked without recursion."""
    count, deepest, stack = 0, 0, [(criterion, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, Or):
            stack.extend((term, depth + 1) for term in merged_terms(node))
        elif isinstance(node, And):
            stack.extend((term, depth + 1) for term in node.nodes)
        elif isinstance(node, Not | Item):
            count += isinstance(node, Item)
            stack.append((node.node, depth + 1))
        elif not isinstance(node, Const):
            count += 1
    return count, deepest


def _parsed(text: str) -> FilterNode:
    try:
        return ScimFilter(text).ast
    except InvalidFilterException:
        raise
    except RecursionError:
        raise InvalidFilterException(detail="the filter is nested too deep") from None
    except Exception as exc:
        raise InvalidFilterException(detail=f"cannot parse the filter: {exc}") from None


def _simple_equality(text: str) -> FilterNode | None:
    match = _SIMPLE.fullmatch(text)
    if match is None:
        return None
    try:
        value = json.loads(match.group(2))
    except ValueError:
        return None
    return Comparison(AttrPath(attr=match.group(1)), CompareOperator.eq, value)


def parse_sort(sort_by: str | None, descending: bool, kind: ResourceKind) -> Sort | None:
    """The order sortBy names, or None (creation order); an unknown attribute is an invalidFilter error."""
    if not sort_by:
        return None
    try:
        attribute = _Translator(kind, False).resolve(_attr_path(sort_by), None)
    except _Unknown:
        raise InvalidFilterException(detail=f"cannot sort by {sort_by!r}: no such attribute") from None
    if attribute.type == "complex":
        value = attribute.sub("value")
        if value is None:
            raise InvalidFilterException(detail=f"cannot sort by the complex attribute {sort_by!r}")
        attribute = value
    return Sort(attribute.path, descending, attribute.type in ("integer", "decimal"))


def _attr_path(text: str) -> AttrPath:
    uri, _, rest = text.rpartition(":") if text.lower().startswith("urn:") else ("", "", text)
    attr, _, sub = rest.partition(".")
    try:
        return AttrPath(attr=attr, sub_attr=sub or None, uri=uri or None)
    except ValueError as exc:
        raise InvalidFilterException(detail=str(exc)) from None


class _Translator:
    """Walks a parsed filter; `within` is the multi-valued attribute of the value filter being read."""

    def __init__(self, kind: ResourceKind, lenient: bool) -> None:
        self.kind = kind
        self.lenient = lenient
        self.unknown: set[str] = set()

    def node(self, node: FilterNode, within: Attribute | None) -> Criterion:
        if isinstance(node, NotNode):
            return Not(self.node(node.expr, within))
        if isinstance(node, LogicalExpr):
            terms = tuple(self.node(term, within) for term in node.terms)
            return And(terms) if node.op.value == "and" else Or(terms)
        if isinstance(node, ValuePath):
            return self.value_path(node, within)
        if isinstance(node, PresentNode):
            return self.guard(lambda: self.present(node.attr_path, within))
        if isinstance(node, Comparison):
            return self.guard(lambda: self.comparison(node, within))
        raise InvalidFilterException(detail=f"unsupported filter expression {node}")

    def guard(self, build: Any) -> Criterion:
        try:
            return build()
        except _Unknown as exc:
            return self.unknown_attribute(str(exc.args[0]))

    def unknown_attribute(self, path: str) -> Criterion:
        if not self.lenient:
            raise InvalidFilterException(detail=f"no attribute {path!r} in the {self.kind.name} schemas")
        self.unknown.add(path.lower())
        return Const(False)

    def resolve(self, path: AttrPath, within: Attribute | None) -> Attribute:
        """The attribute a path names: a sub-attribute of `within` inside a value filter."""
        if within is not None:
            if path.uri is None and path.sub_attr is None and (sub := within.sub(path.attr)) is not None:
                return sub
            raise _Unknown(f"{within.name}.{path}")
        top = self.kind.resolve(path.attr, path.uri)
        if top is None or top.returned == "never":
            raise _Unknown(str(path))
        if path.sub_attr is None:
            return top
        sub = top.sub(path.sub_attr)
        if sub is None:
            raise _Unknown(str(path))
        return sub

    def top(self, path: AttrPath) -> Attribute | None:
        return None if path.sub_attr is None else self.kind.resolve(path.attr, path.uri)

    def value_path(self, node: ValuePath, within: Attribute | None) -> Criterion:
        if within is not None:
            raise InvalidFilterException(detail="a value filter cannot hold another")
        try:
            attribute = self.resolve(node.attr_path, None)
        except _Unknown as exc:
            return self.unknown_attribute(str(exc.args[0]))
        if not attribute.multi or attribute.type != "complex":
            raise InvalidFilterException(detail=f"{attribute.name} is not a multi-valued complex attribute")
        return Item(attribute.path, self.node(node.val_filter, attribute))

    def present(self, path: AttrPath, within: Attribute | None) -> Criterion:
        attribute = self.resolve(path, within)
        parent = self.top(path) if within is None else None
        if parent is not None and parent.multi:
            return Item(parent.path, Present(attribute.path))
        if attribute.multi:
            return Item(attribute.path, Const(True))
        if attribute.type == "complex":
            return Or(tuple(Present(sub.path) for sub in attribute.subs.values()))
        return Present(attribute.path)

    def comparison(self, node: Comparison, within: Attribute | None) -> Criterion:
        attribute = self.resolve(node.attr_path, within)
        parent = self.top(node.attr_path) if within is None else None
        if attribute.multi:
            parent, attribute = attribute, self.value_of(attribute)
        op = node.op.value
        compare = self.compare(attribute, op, node.value)
        if parent is None or not parent.multi:
            return compare
        # any item matches; `ne` reads as "no item equals", as scim2-models evaluates it
        if op == "ne":
            return Not(Item(parent.path, Compare(compare.path, "eq", compare.value, compare.case_exact)))
        return Item(parent.path, compare)

    def value_of(self, attribute: Attribute) -> Attribute:
        value = attribute.sub("value")
        if value is None:
            raise InvalidFilterException(detail=f"{attribute.name} has no value sub-attribute to compare")
        return value

    def compare(self, attribute: Attribute, op: str, value: Any) -> Compare:
        if attribute.type == "complex":
            raise InvalidFilterException(detail=f"compare a sub-attribute of {attribute.name}, not the attribute")
        if attribute.type in _UNINDEXED or (attribute.path.startswith("meta.") and attribute.path not in _COLUMN_PATHS):
            raise InvalidFilterException(detail=f"{attribute.name} cannot be filtered")
        if value is None:
            if op not in ("eq", "ne"):
                raise InvalidFilterException(detail=f"null only compares with eq and ne, not {op}")
            return Compare(attribute.path, op, None, attribute.case_exact)
        return Compare(attribute.path, op, _operand(attribute, op, value), attribute.case_exact)


class _Unknown(Exception):
    """An attribute path no published schema has."""


def _operand(attribute: Attribute, op: str, value: Any) -> str | float | bool | datetime:
    kind = attribute.type
    if kind == "boolean":
        if not isinstance(value, bool) or op not in ("eq", "ne"):
            raise InvalidFilterException(detail=f"{attribute.name} is boolean: compare it with eq or ne to true/false")
        return value
    if kind in ("integer", "decimal"):
        if isinstance(value, bool) or not isinstance(value, int | float) or op in _SUBSTRING:
            raise InvalidFilterException(detail=f"{attribute.name} is a number: compare it to a number")
        return float(value)
    if not isinstance(value, str):
        raise InvalidFilterException(detail=f"{attribute.name} is a {kind}: compare it to a string")
    if not value.isascii():
        try:
            value.encode("utf-8")  # a JSON escape such as \ud800 decodes to a lone surrogate no store can hold
        except UnicodeEncodeError:
            raise InvalidFilterException(detail=f"the value for {attribute.name} is not valid Unicode") from None
    if kind == "dateTime":
        if op in _SUBSTRING:
            raise InvalidFilterException(detail=f"{attribute.name} is a dateTime: {op} does not apply")
        return _datetime(attribute, value)
    if attribute.path == "username":
        return name_key(value)
    return comparison_key(value, attribute.case_exact)


def _datetime(attribute: Attribute, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):  # not a date, or one whose UTC time falls outside years 1 to 9999
        raise InvalidFilterException(detail=f"{value[:60]!r} is not a dateTime for {attribute.name}") from None
