"""Evaluating filter trees in Python, exactly as PostgreSQL would.

Why: the bus decides for every change and every filtered subscription whether a
row matches, and most filters (``shipment_id=eq.42``, ``created_at=gt.2026-01-01``,
``status=in.(new,done)``) can be decided here without a round trip, provided
Python agrees with PostgreSQL on every value.  It does so by construction: the
row values and the filter's literals are both PostgreSQL's own JSON (the
literals are spelled by PostgreSQL when the subscription is made) and both go
through one key function per type (:mod:`pgpulse.routing.values`).

A condition is evaluated here only when that is exact (:func:`evaluable`):
ordering text needs a collation that sorts by code point, equality needs a
deterministic one, ``ilike`` case folding follows the database's locale, and
arrays, jsonb, ranges, enum order and every other type are left to PostgreSQL
(:mod:`pgpulse.routing.db_filters`).  NULL follows SQL's three-valued logic:
a comparison with NULL is unknown, ``not`` keeps it unknown, ``x = any('{}')``
is false even for NULL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from pgpulse.catalog import Column, Table
from pgpulse.routing.filters import Condition, Filter, Or
from pgpulse.routing.values import TEXT_TYPES, KeyFunction, RowKeys, key_function

__all__ = [
    "Tri",
    "compile_filter",
    "conditions",
    "evaluable",
    "like_regex",
    "needs_literal",
]

Tri: TypeAlias = Callable[[RowKeys], bool | None]
"""A filter over one row: True, False, or None for SQL's unknown."""

_ORDERING = frozenset({"lt", "lte", "gt", "gte"})
_EQUALITY = frozenset({"eq", "neq", "in"})
JSON_TYPES = frozenset({"json", "jsonb"})


def conditions(filt: Filter) -> list[Condition]:
    """Every condition of a filter tree, in order."""
    if isinstance(filt, Condition):
        return [filt]
    out: list[Condition] = []
    for item in filt.items:
        out.extend(conditions(item))
    return out


def needs_literal(cond: Condition) -> bool:
    """Whether PostgreSQL must spell this condition's literal (for its key)."""
    return cond.arg is None and (cond.op in _EQUALITY or cond.op in _ORDERING)


def _condition_evaluable(cond: Condition, column: Column) -> bool:
    op = cond.op
    if cond.arg is not None:
        return False  # a modifier (any/all) or a text search configuration
    if op == "is":
        return column.base_type not in JSON_TYPES
    if key_function(column.base_type, column.category) is None:
        return False
    if column.base_type in TEXT_TYPES:
        if op in _ORDERING:
            return column.code_point_order
        if op == "like":
            return column.deterministic
        return op in _EQUALITY and column.deterministic
    if column.category == "E":
        return op in _EQUALITY
    return op in _EQUALITY or op in _ORDERING


def evaluable(filt: Filter, table: Table) -> bool:
    """Whether every condition of *filt* can be decided exactly in Python."""
    return all(
        _condition_evaluable(cond, table.column(cond.column))
        for cond in conditions(filt)
    )


def like_regex(pattern: str, insensitive: bool = False) -> re.Pattern[str]:
    """PostgreSQL's LIKE (after PostgREST's ``*`` → ``%``): ``%`` any run,
    ``_`` one character, backslash escapes the next character."""
    pattern = pattern.replace("*", "%")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 == len(pattern):
                raise ValueError("LIKE pattern must not end with escape character")
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.S | (re.I if insensitive else 0))


def _compare(op: str) -> Callable[[Any, Any], bool]:
    return {
        "eq": lambda a, b: a == b,
        "neq": lambda a, b: a != b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
    }[op]


def _condition(cond: Condition, column: Column, literal: Any) -> Tri:
    """One condition, without its negation."""
    col, op = cond.column, cond.op
    function: KeyFunction | None = key_function(column.base_type, column.category)
    if op == "is":
        target = cond.value
        if target is None or target == "unknown":
            return lambda row: row.values.get(col) is None
        want = target == "true"
        return lambda row: row.values.get(col) is want
    assert function is not None
    if op == "like":
        regex = like_regex(str(cond.value))

        def like(row: RowKeys) -> bool | None:
            raw = row.values.get(col)
            if raw is None:
                return None
            if not isinstance(raw, str):
                raise ValueError(f"expected a string, got {raw!r}")
            return regex.fullmatch(raw) is not None

        return like
    if op == "in":
        if not isinstance(literal, list):
            raise ValueError(f"expected a list of values, got {literal!r}")
        wanted = frozenset(function(item) for item in literal if item is not None)
        has_null = any(item is None for item in literal)
        empty = not literal

        def member(row: RowKeys) -> bool | None:
            # x = ANY(array): false for an empty array (even for NULL x),
            # unknown for NULL x or when no element equals and one is NULL.
            if empty:
                return False
            key = row.key(col, function)
            if key is None:
                return None
            if key in wanted:
                return True
            return None if has_null else False

        return member
    target_key = function(literal)
    compare = _compare(op)

    def comparison(row: RowKeys) -> bool | None:
        key = row.key(col, function)
        if key is None:
            return None
        return compare(key, target_key)

    return comparison


def compile_filter(
    filt: Filter, table: Table, literals: Mapping[Condition, Any]
) -> Tri:
    """A three-valued predicate for *filt* on rows of *table*.

    *literals* maps each condition that :func:`needs_literal` to its value as
    PostgreSQL spells it in JSON (a list for ``in``).  The caller checked with
    :func:`evaluable` that Python decides *filt* exactly.
    """
    if isinstance(filt, Condition):
        column = table.column(filt.column)
        base = _condition(filt, column, literals.get(filt))
        if not filt.negate:
            return base
        if filt.op == "is":
            return lambda row: not base(row)

        def negated(row: RowKeys) -> bool | None:
            value = base(row)
            return None if value is None else not value

        return negated
    parts = [compile_filter(item, table, literals) for item in filt.items]
    absorbing = isinstance(filt, Or)  # True absorbs OR, False absorbs AND
    negate = filt.negate

    def combined(row: RowKeys) -> bool | None:
        unknown = False
        for part in parts:
            value = part(row)
            if value is None:
                unknown = True
            elif value is absorbing:
                return not absorbing if negate else absorbing
        if unknown:
            return None
        return absorbing if negate else not absorbing

    return combined
