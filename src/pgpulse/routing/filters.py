"""The one filter grammar of pgpulse (PostgREST style), parsed into a small tree.

Used everywhere a user filters rows: SSE/WebSocket subscriptions, live queries, the
query builder and the REST endpoint.  Examples::

    shipment_id=eq.42          status=in.(new,done)        deleted_at=is.null
    title=like.*draft*         id=not.in.(1,2)             or=(a.eq.1,b.gt.2)
    and=(a.eq.1,or(b.lt.0,b.gt.9))

This module parses (and builds trees from Python values).  Evaluating a tree in
Python is :mod:`pgpulse.routing.matching`; turning it into SQL is the query layer's job,
which binds every value as a parameter.
Column names are plain strings here; they are validated against the catalog by
whoever binds a filter to a table.
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid as _uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias

import orjson

from pgpulse.exceptions import FilterError

__all__ = [
    "OPERATORS",
    "And",
    "Condition",
    "Filter",
    "Or",
    "condition",
    "parse_filter",
    "parse_filters",
    "parse_list",
    "to_literal",
]

#: Comparison operators of the grammar and their meaning.
OPERATORS: dict[str, str] = {
    "eq": "=",
    "neq": "<>",
    "lt": "<",
    "lte": "<=",
    "gt": ">",
    "gte": ">=",
    "like": "LIKE",
    "ilike": "ILIKE",
    "in": "IN",
    "is": "IS",
    "cs": "@>",
    "cd": "<@",
}

_IS_VALUES = ("null", "true", "false", "unknown")


@dataclass(frozen=True)
class Condition:
    """``column op value``, optionally negated (``not.``)."""

    column: str
    op: str
    value: str | tuple[str, ...] | None
    """Raw literal; a tuple for ``in`` (and ``cs``/``cd`` written as ``(a,b)``);
    ``None`` only for ``is``."""
    negate: bool = False

    def __str__(self) -> str:
        return f"{self.column}={'not.' if self.negate else ''}{self.op}.{_fmt(self)}"


@dataclass(frozen=True)
class Or:
    items: tuple[Filter, ...]
    negate: bool = False


@dataclass(frozen=True)
class And:
    items: tuple[Filter, ...]
    negate: bool = False


Filter: TypeAlias = Condition | Or | And


def _fmt(cond: Condition) -> str:
    if isinstance(cond.value, tuple):
        return "(" + ",".join(cond.value) + ")"
    return "null" if cond.value is None else cond.value


# -- parsing -------------------------------------------------------------------

_IDENT = re.compile(r"^[^\s=(),.][^\s=(),]*$")


def _check_column(column: str, source: str) -> str:
    if (
        not column
        or not _IDENT.match(column)
        or column.startswith(".")
        or ".." in column
    ):
        raise FilterError(
            f"{column!r} is not a column name in filter {source!r}; "
            "expected e.g. 'shipment_id=eq.42'."
        )
    return column


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split on *sep* outside parentheses and double quotes."""
    out: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\" and i + 1 < len(text):
                current.append(ch + text[i + 1])
                i += 2
                continue
            if ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise FilterError(f"unbalanced ')' in {text!r}")
        elif ch == sep and depth == 0:
            out.append("".join(current))
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    if quoted:
        raise FilterError(f"unterminated '\"' in {text!r}")
    if depth:
        raise FilterError(f"unbalanced '(' in {text!r}")
    out.append("".join(current))
    return out


def _unquote(item: str) -> str:
    item = item.strip()
    if len(item) >= 2 and item[0] == '"' and item[-1] == '"':
        return re.sub(r"\\(.)", r"\1", item[1:-1])
    return item


def parse_list(text: str, source: str) -> tuple[str, ...]:
    """Parse ``(a,b,"c,d")`` into its items."""
    if not (text.startswith("(") and text.endswith(")")):
        raise FilterError(
            f"expected a parenthesized list like (a,b) in {source!r}, got {text!r}"
        )
    inner = text[1:-1]
    if not inner.strip():
        return ()
    return tuple(_unquote(item) for item in split_top(inner))


def _parse_operation(column: str, expr: str, source: str) -> Condition:
    negate = False
    if expr.startswith("not."):
        negate = True
        expr = expr[4:]
    op, dot, literal = expr.partition(".")
    if not dot:
        raise FilterError(
            f"filter {source!r} has no operator; expected 'column=op.value' "
            f"with op one of {', '.join(OPERATORS)}."
        )
    if op not in OPERATORS:
        raise FilterError(
            f"unknown operator {op!r} in filter {source!r}; "
            f"use one of {', '.join(OPERATORS)}."
        )
    value: str | tuple[str, ...] | None
    if op == "in" or (op in ("cs", "cd") and literal.startswith("(")):
        value = parse_list(literal, source)
    elif op in ("cs", "cd"):
        # A PostgreSQL literal of the column's type, as PostgREST passes it:
        # an array ({a,b}), a JSON document ({"lang":"de"}), a range ([1,5)).
        value = _unquote(literal)
    elif op == "is":
        if literal.lower() not in _IS_VALUES:
            raise FilterError(
                f"'is' takes null, true, false or unknown in {source!r}, "
                f"got {literal!r}."
            )
        value = None if literal.lower() == "null" else literal.lower()
    else:
        value = _unquote(literal)
    return Condition(_check_column(column, source), op, value, negate)


#: How deep or=/and= may nest, and how many terms one filter may hold:
#: enough for any hand-written filter, and a bound on the work (and the
#: recursion) a request can ask for.
MAX_DEPTH = 16
MAX_TERMS = 1024


def _parse_logic(
    kind: str, body: str, source: str, negate: bool, depth: int = 1
) -> Filter:
    if depth > MAX_DEPTH:
        raise FilterError(
            f"{source[:80]!r}... nests or=/and= more than {MAX_DEPTH} levels deep; "
            "flatten it (and=(a,b,c) instead of and=(a,and(b,c)))"
        )
    if not (body.startswith("(") and body.endswith(")")):
        raise FilterError(f"{kind} needs a parenthesized list in {source[:200]!r}")
    parsed: list[Filter] = []
    for raw in split_top(body[1:-1]):
        raw = raw.strip()
        parsed.append(_parse_logic_item(raw, source, depth))
    if not parsed:
        raise FilterError(f"{kind}=() is empty in {source[:200]!r}")
    return (Or if kind == "or" else And)(tuple(parsed), negate)


def _parse_logic_item(raw: str, source: str, depth: int) -> Filter:
    """An item inside or=(...): ``col.op.value``, ``or(...)`` or ``not.and(...)``."""
    negate = False
    if raw.startswith("not.") and raw[4:].startswith(("or(", "and(")):
        negate, raw = True, raw[4:]
    for kind in ("or", "and"):
        if raw.startswith(kind + "("):
            return _parse_logic(kind, raw[len(kind) :], source, negate, depth + 1)
    column, dot, expr = raw.partition(".")
    if not dot:
        raise FilterError(f"expected 'column.op.value' inside {source!r}, got {raw!r}")
    # Embedded paths (nodes.status.eq.x) are resolved by the query layer: here the
    # column is everything before the first known operator.
    parts = raw.split(".")
    for i in range(1, len(parts)):
        if parts[i] in OPERATORS or (
            parts[i] == "not" and i + 1 < len(parts) and parts[i + 1] in OPERATORS
        ):
            column = ".".join(parts[:i])
            expr = ".".join(parts[i:])
            break
    return _parse_operation(column, expr, source)


def parse_filter(key: str, value: str) -> Filter:
    """Parse one ``key=value`` pair (``status``, ``in.(a,b)``) into a filter."""
    source = f"{key}={value}"
    if key in ("or", "and", "not.or", "not.and"):
        negate = key.startswith("not.")
        return _parse_logic(key.removeprefix("not."), value, source, negate)
    return _parse_operation(key, value, source)


def parse_filters(text: str, sep: str = ";") -> list[Filter]:
    """Parse ``a=eq.1;b=in.(x,y)`` (filters joined by *sep*); at most
    :data:`MAX_DEPTH` levels and :data:`MAX_TERMS` conditions and list items."""
    out: list[Filter] = []
    for part in split_top(text, sep):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq:
            raise FilterError(
                f"filter {part!r} must look like 'column=op.value' "
                "(e.g. 'shipment_id=eq.42')."
            )
        out.append(parse_filter(key.strip(), value))
    check_size(out)
    return out


def check_size(filters: Iterable[Filter]) -> None:
    """Raise :class:`FilterError` when *filters* hold more than
    :data:`MAX_TERMS` conditions and list items."""
    count = 0
    stack: list[Filter] = list(filters)
    while stack and count <= MAX_TERMS:
        item = stack.pop()
        if isinstance(item, Condition):
            count += 1 + (len(item.value) if isinstance(item.value, tuple) else 0)
        else:
            stack.extend(item.items)
    if count > MAX_TERMS:
        raise FilterError(
            f"the filter has more than {MAX_TERMS} conditions and list items; "
            "split it into several subscriptions or requests"
        )


def columns_of(filt: Filter) -> set[str]:
    """Every column a filter refers to."""
    if isinstance(filt, Condition):
        return {filt.column}
    out: set[str] = set()
    for item in filt.items:
        out |= columns_of(item)
    return out


# -- building filters from Python values --------------------------------------------


def to_literal(value: object) -> str:
    """Spell a Python value the way the grammar writes it (``42``, ``true``, ISO dates).

    Why: the query builder takes Python values (``.eq("id", 42)``) and turns them into
    the same :class:`Condition` a URL would give, so REST, subscriptions and the
    builder share one representation.  ``None`` is rejected: SQL matches NULL only
    with ``is``.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, _dt.datetime) and value.tzinfo is None:
        # Naive datetimes are UTC everywhere in pgpulse (as in asyncpg and in
        # pgpulse.routing.matching), not the server's TimeZone.
        return value.isoformat() + "+00:00"
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, _uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=_json_default).decode()
    if value is None:
        raise FilterError(
            "None is not a filter value: NULL never equals anything in SQL; "
            "use is_(column, None) to match NULL."
        )
    raise FilterError(
        f"cannot use {value!r} (a {type(value).__name__}) as a filter value; pass "
        "str, int, float, Decimal, bool, date/time, UUID, bytes, dict or list."
    )


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{value!r} (a {type(value).__name__}) is not JSON serializable")


def condition(column: str, op: str, value: object, negate: bool = False) -> Condition:
    """Build a :class:`Condition` from a Python value, checked like a parsed one.

    ``in`` takes an iterable of values; ``cs``/``cd`` take an iterable (array
    elements), a dict (a JSON document, kept as its JSON text) or a string (a raw
    PostgreSQL literal such as ``{a,b}`` or ``[1,5)``); ``is`` takes ``None``,
    ``True``, ``False`` or one of ``null``/``true``/``false``/``unknown``.
    """
    if not isinstance(column, str) or not column:
        raise FilterError(f"expected a column name, got {column!r}")
    if op not in OPERATORS:
        raise FilterError(
            f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}."
        )
    literal: str | tuple[str, ...] | None
    if op == "is":
        if value is None or isinstance(value, bool):
            literal = None if value is None else to_literal(value)
        elif isinstance(value, str) and value.lower() in _IS_VALUES:
            literal = None if value.lower() == "null" else value.lower()
        else:
            raise FilterError(
                f"is_ takes None, True, False or 'unknown' for column {column!r}, "
                f"got {value!r}."
            )
    elif op == "in":
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            raise FilterError(
                f"in_ takes a list of values for column {column!r}, got {value!r}; "
                "e.g. in_('status', ['new', 'done'])."
            )
        literal = tuple(to_literal(v) for v in value)
    elif op in ("cs", "cd"):
        if isinstance(value, str):
            literal = value
        elif isinstance(value, Mapping):
            literal = to_literal(dict(value))
        elif isinstance(value, Iterable) and not isinstance(value, bytes):
            literal = tuple(to_literal(v) for v in value)
        else:
            raise FilterError(
                f"contains/contained_by take a list, a dict or a literal string for "
                f"column {column!r}, got {value!r}."
            )
    else:
        literal = to_literal(value)
    return Condition(column, op, literal, negate)
