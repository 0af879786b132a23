"""The one filter grammar of pgpulse (PostgREST style), parsed into a small tree.

Used everywhere a user filters rows: SSE/WebSocket subscriptions, live queries, the
query builder and the REST endpoint.  Examples::

    shipment_id=eq.42          status=in.(new,done)        deleted_at=is.null
    title=like.*draft*         id=not.in.(1,2)             or=(a.eq.1,b.gt.2)
    and=(a.eq.1,or(b.lt.0,b.gt.9))

This module only parses and evaluates in Python (``compile_filter``).  Turning a
tree into SQL is done by the query layer, which binds every value as a parameter.
Column names are plain strings here; they are validated against the catalog by
whoever binds a filter to a table.
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid as _uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeAlias

import orjson

from pgpulse.exceptions import FilterError

__all__ = [
    "OPERATORS",
    "And",
    "Condition",
    "Filter",
    "Or",
    "compile_filter",
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
    """Raw literal; a tuple for ``in``/``cs``/``cd``; ``None`` only for ``is``."""
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
    if op in ("in", "cs", "cd"):
        if op != "in" and literal.startswith("{") and literal.endswith("}"):
            literal = "(" + literal[1:-1] + ")"
        value = parse_list(literal, source)
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


def _parse_logic(kind: str, body: str, source: str, negate: bool) -> Filter:
    items = parse_list(body, source) if body.startswith("(") else None
    if items is None:
        raise FilterError(f"{kind} needs a parenthesized list in {source!r}")
    parsed: list[Filter] = []
    for raw in split_top(body[1:-1]):
        raw = raw.strip()
        parsed.append(_parse_logic_item(raw, source))
    if not parsed:
        raise FilterError(f"{kind}=() is empty in {source!r}")
    return (Or if kind == "or" else And)(tuple(parsed), negate)


def _parse_logic_item(raw: str, source: str) -> Filter:
    """An item inside or=(...): ``col.op.value``, ``or(...)`` or ``not.and(...)``."""
    negate = False
    if raw.startswith("not.") and raw[4:].startswith(("or(", "and(")):
        negate, raw = True, raw[4:]
    for kind in ("or", "and"):
        if raw.startswith(kind + "("):
            return _parse_logic(kind, raw[len(kind) :], source, negate)
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
    """Parse ``a=eq.1;b=in.(x,y)`` (filters joined by *sep*)."""
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
    return out


def columns_of(filt: Filter) -> set[str]:
    """Every column a filter refers to."""
    if isinstance(filt, Condition):
        return {filt.column}
    out: set[str] = set()
    for item in filt.items:
        out |= columns_of(item)
    return out


# -- evaluation in Python ---------------------------------------------------------

Predicate: TypeAlias = Callable[[Mapping[str, Any]], bool]
Coerce: TypeAlias = Callable[[Any], Any]

_INT_TYPES = {"int2", "int4", "int8", "oid"}
_FLOAT_TYPES = {"float4", "float8", "numeric", "money"}


def _parse_datetime(value: Any) -> Any:
    if value is None or isinstance(value, _dt.datetime | _dt.date):
        return value
    text = str(value).strip().replace(" ", "T", 1)
    parsed = _dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.UTC)
    return parsed


def coercer(base_type: str, category: str) -> Coerce | None:
    """How to turn a literal or a JSON row value of this type into a comparable.

    ``None`` means the type cannot be compared in Python (only ``is`` works).
    """
    if base_type in _INT_TYPES:
        return lambda v: v if isinstance(v, int) and not isinstance(v, bool) else int(v)
    if base_type in _FLOAT_TYPES:
        return lambda v: v if isinstance(v, int | float | Decimal) else Decimal(str(v))
    if base_type == "bool":

        def to_bool(v: Any) -> bool:
            if isinstance(v, bool):
                return v
            text = str(v).lower()
            if text in ("true", "t", "1", "yes", "on"):
                return True
            if text in ("false", "f", "0", "no", "off"):
                return False
            raise ValueError(v)

        return to_bool
    if base_type in ("timestamptz", "timestamp"):
        return _parse_datetime
    if base_type == "date":
        return lambda v: _dt.date.fromisoformat(str(v))
    if base_type == "uuid":
        return lambda v: str(v).lower()
    if category in ("S", "E", "D", "T", "I", "N", "U", "V") or base_type == "text":
        return str
    return None


def _like_regex(pattern: str, insensitive: bool) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        if ch in "%*":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("^" + "".join(out) + "$", re.S | (re.I if insensitive else 0))


def _condition_predicate(
    cond: Condition, coerce: Coerce | None, type_desc: str
) -> Predicate:
    col = cond.column
    op = cond.op
    source = str(cond)

    def lit(raw: str) -> Any:
        if coerce is None:
            raise FilterError(
                f"column {col!r} has type {type_desc}, which subscriptions can "
                f"only filter with 'is' (in {source!r})."
            )
        try:
            return coerce(raw)
        except (ValueError, TypeError, InvalidOperation):
            raise FilterError(
                f"{raw!r} is not a valid {type_desc} value for column {col!r} "
                f"(in {source!r})."
            ) from None

    def value_of(row: Mapping[str, Any]) -> Any:
        raw = row.get(col)
        if raw is None or coerce is None:
            return raw
        try:
            return coerce(raw)
        except (ValueError, TypeError, InvalidOperation):
            return None

    base: Predicate
    if op == "is":
        target = cond.value
        if target is None:

            def base(row: Mapping[str, Any]) -> bool:
                return row.get(col) is None

        elif target == "unknown":

            def base(row: Mapping[str, Any]) -> bool:
                return row.get(col) is None

        else:
            want = target == "true"

            def base(row: Mapping[str, Any]) -> bool:
                return row.get(col) is want

    elif op == "in":
        assert isinstance(cond.value, tuple)
        wanted = frozenset(lit(v) for v in cond.value)

        def base(row: Mapping[str, Any]) -> bool:
            v = value_of(row)
            return v is not None and v in wanted

    elif op in ("like", "ilike"):
        if coerce is not str:
            raise FilterError(
                f"'{op}' needs a text column; {col!r} has type {type_desc} "
                f"(in {source!r})."
            )
        assert isinstance(cond.value, str)
        regex = _like_regex(cond.value, op == "ilike")

        def base(row: Mapping[str, Any]) -> bool:
            v = row.get(col)
            return isinstance(v, str) and regex.match(v) is not None

    elif op in ("cs", "cd"):
        assert isinstance(cond.value, tuple)
        items = frozenset(cond.value)

        def base(row: Mapping[str, Any]) -> bool:
            v = row.get(col)
            if not isinstance(v, list):
                return False
            have = frozenset(str(x) for x in v)
            return items <= have if op == "cs" else have <= items

    else:
        assert isinstance(cond.value, str)
        target_value = lit(cond.value)
        compare: Callable[[Any, Any], bool] = {
            "eq": lambda a, b: a == b,
            "neq": lambda a, b: a != b,
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
        }[op]

        def base(row: Mapping[str, Any]) -> bool:
            v = value_of(row)
            if v is None:
                return False
            try:
                return compare(v, target_value)
            except TypeError:
                return False

    if cond.negate:
        if op == "is":
            return lambda row: not base(row)
        # SQL semantics: NOT (NULL op x) is still not true.
        return lambda row: row.get(col) is not None and not base(row)
    return base


def compile_filter(
    filt: Filter, types: Mapping[str, tuple[str, str, str]]
) -> Predicate:
    """A Python predicate over a row dict, with literals coerced to column types.

    *types* maps column → (base_type, category, display type); it must contain
    every column the filter names (the caller validated them against the
    catalog).  Raises :class:`FilterError` for values that do not fit the type.
    """
    tri = _compile_tri(filt, types)
    return lambda row: tri(row) is True


Tri: TypeAlias = Callable[[Mapping[str, Any]], bool | None]


def _compile_tri(filt: Filter, types: Mapping[str, tuple[str, str, str]]) -> Tri:
    """SQL's three-valued logic: a comparison with NULL is unknown (None), and
    ``not``/``and``/``or`` propagate unknown the way PostgreSQL does, so a
    subscription matches exactly the rows the same filter selects in SQL."""
    if isinstance(filt, Condition):
        base_type, category, desc = types[filt.column]
        positive = Condition(filt.column, filt.op, filt.value, negate=False)
        base = _condition_predicate(positive, coercer(base_type, category), desc)
        col, is_op, negate = filt.column, filt.op == "is", filt.negate

        def condition(row: Mapping[str, Any]) -> bool | None:
            if not is_op and row.get(col) is None:
                return None
            result = base(row)
            return not result if negate else result

        return condition
    parts = [_compile_tri(item, types) for item in filt.items]
    absorbing = isinstance(filt, Or)  # True absorbs OR, False absorbs AND
    negate = filt.negate

    def combined(row: Mapping[str, Any]) -> bool | None:
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
        # compile_filter), not the server's TimeZone.
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
