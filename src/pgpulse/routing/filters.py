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

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

from pgpulse.exceptions import FilterError

__all__ = [
    "OPERATORS",
    "And",
    "Condition",
    "Filter",
    "Or",
    "parse_filter",
    "parse_filters",
    "parse_list",
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
    "ov": "&&",
    "sl": "<<",
    "sr": ">>",
    "nxl": "&>",
    "nxr": "&<",
    "adj": "-|-",
    "match": "~",
    "imatch": "~*",
    "fts": "to_tsquery",
    "plfts": "plainto_tsquery",
    "phfts": "phraseto_tsquery",
    "wfts": "websearch_to_tsquery",
}

#: Full-text search operators: ``fts(english).word`` names a text search
#: configuration in parentheses.
TEXT_SEARCH = frozenset({"fts", "plfts", "phfts", "wfts"})
#: Operators that take ``(any)`` / ``(all)``: ``like(any).{a*,b*}`` is
#: ``LIKE ANY('{a%,b%}')``.
QUANTIFIABLE = frozenset(
    {"eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "match", "imatch"}
)
#: Operators whose value may be a list ``(a,b)`` or a PostgreSQL literal.
_LISTABLE = frozenset({"cs", "cd", "ov"})
_OP = re.compile(r"^([a-z]+)(?:\(([A-Za-z_][A-Za-z0-9_.]*)\))?$")

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
    arg: str | None = None
    """A full-text search operator's configuration (``fts(english)``)."""

    def __str__(self) -> str:
        op = self.op if self.arg is None else f"{self.op}({self.arg})"
        return f"{self.column}={'not.' if self.negate else ''}{op}.{_fmt(self)}"


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
        if cond.arg in ("any", "all"):
            return "{" + ",".join(cond.value) + "}"
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
    arg = None
    if op.endswith(")") and "(" in op:
        # fts(english).word: the configuration's name may hold a dot
        # (schema.config), so split after the closing parenthesis.
        head, _, rest = expr.partition(")")
        op, dot, literal = head + ")", rest[:1], rest[1:]
    if not dot:
        raise FilterError(
            f"filter {source!r} has no operator; expected 'column=op.value' "
            f"with op one of {', '.join(OPERATORS)}."
        )
    match = _OP.match(op)
    if match is not None and match.group(2) is not None:
        op, arg = match.group(1), match.group(2)
        if op in QUANTIFIABLE and arg in ("any", "all"):
            if not (literal.startswith("{") and literal.endswith("}")):
                raise FilterError(
                    f"'{op}({arg})' takes a list like {{a,b}}, in filter {source!r}."
                )
            items = tuple(_unquote(i) for i in split_top(literal[1:-1]) if i != "")
            return Condition(_check_column(column, source), op, items, negate, arg)
        if op not in TEXT_SEARCH:
            raise FilterError(
                f"only full-text search operators ({', '.join(sorted(TEXT_SEARCH))}) "
                "take a configuration in parentheses, and eq, like, ilike, gt... "
                f"take (any) or (all), in filter {source!r}."
            )
    if op not in OPERATORS:
        raise FilterError(
            f"unknown operator {op!r} in filter {source!r}; "
            f"use one of {', '.join(OPERATORS)}."
        )
    value: str | tuple[str, ...] | None
    if op == "in" or (op in _LISTABLE and literal.startswith("(")):
        value = parse_list(literal, source)
    elif op in _LISTABLE:
        # A PostgreSQL literal of the column's type, as PostgREST passes it:
        # an array ({a,b}), a JSON document ({"lang":"de"}), a range ([1,5)).
        value = _unquote(literal)
    elif op == "is":
        if literal.lower() == "not_null":
            # PostgREST's spelling of not.is.null.
            literal, negate = "null", not negate
        if literal.lower() not in _IS_VALUES:
            raise FilterError(
                f"'is' takes null, not_null, true, false or unknown in {source!r}, "
                f"got {literal!r}."
            )
        value = None if literal.lower() == "null" else literal.lower()
    else:
        value = _unquote(literal)
    return Condition(_check_column(column, source), op, value, negate, arg)


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
        name = parts[i].split("(", 1)[0]
        following = parts[i + 1].split("(", 1)[0] if i + 1 < len(parts) else ""
        if name in OPERATORS or (name == "not" and following in OPERATORS):
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
