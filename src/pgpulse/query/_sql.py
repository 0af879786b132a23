"""SQL pieces: bound parameters, casts to column types, and filter trees as SQL.

Why this shape: every value is sent as a bound ``text`` (or ``text[]``) parameter
and cast to the column's type in SQL (``$1::text::int4``).  That way one code path
serves Python values and URL strings alike, PostgreSQL does the parsing (and
reports bad input with its own message), and the SQL text never depends on a
value.  Identifiers only come from the catalog and go through ``quote_ident``.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from pgpulse.catalog import Column, Table, quote_ident
from pgpulse.catalog.functions import Computed
from pgpulse.exceptions import FilterError
from pgpulse.routing.filter_values import to_literal
from pgpulse.routing.filters import OPERATORS, TEXT_SEARCH, Condition, Filter, Or

__all__ = [
    "Params",
    "bind_value",
    "column_ref",
    "column_sql",
    "json_path",
    "path_column",
    "render_filter",
    "value_type",
]

_PLAIN_TYPE = re.compile(r"^[a-z_][a-z0-9_]*$")
_TYPMOD = re.compile(r"\(\d+(?:,\s*\d+)?\)")
#: Types compared as text without a second cast.
_TEXT_TYPES = {"text", "varchar"}


class Params:
    """Collects bound values and hands out their ``$n`` placeholders."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def column_ref(alias: str, column: Column) -> str:
    return f"{quote_ident(alias)}.{quote_ident(column.name)}"


_ARROW = re.compile(r"(->>?)")
_INDEX = re.compile(r"^-?\d+$")


def json_path(name: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """``data->a->>b`` as ``("data", (("->", "a"), ("->>", "b")))``; None for a
    plain column name.  Raises :class:`FilterError` for a malformed path."""
    if "->" not in name:
        return None
    parts = _ARROW.split(name)
    head, steps = parts[0], tuple(zip(parts[1::2], parts[2::2], strict=True))
    if not head or any(not key for _, key in steps):
        raise FilterError(
            f"JSON path {name!r} has an empty step; write e.g. 'data->a->>b'."
        )
    if any(arrow == "->>" for arrow, _ in steps[:-1]):
        raise FilterError(
            f"JSON path {name!r} uses '->>' before its last step; '->>' gives "
            "text, so only the last step may use it (data->a->>b)."
        )
    return head, steps


def path_column(table: Table, name: str) -> Column:
    """The column a name refers to: the table's own, or for a JSON path a
    stand-in typed as what the path yields (``->>`` text, ``->`` the column's
    json or jsonb)."""
    path = json_path(name)
    if path is None:
        computed = _computed(table, name)
        return table.column(name) if computed is None else computed.as_column()
    head, steps = path
    column = table.column(head)
    if column.base_type not in ("json", "jsonb"):
        raise FilterError(
            f"JSON path {name!r} needs a json or jsonb column; {head!r} has type "
            f"{column.type_name}."
        )
    if steps[-1][0] == "->>":
        return Column(name, "text", "S", "text", True)
    return Column(name, column.type_name, "U", column.base_type, True)


def column_sql(table: Table, alias: str, name: str, params: Params) -> str:
    """SQL for a column, or a JSON path into one (keys bound as values)."""
    path = json_path(name)
    if path is None:
        computed = _computed(table, name)
        if computed is not None:
            return computed.call(alias)
        return column_ref(alias, table.column(name))
    head, steps = path
    path_column(table, name)  # checks the column's type
    out = column_ref(alias, table.column(head))
    for arrow, key in steps:
        index = _INDEX.match(key) is not None
        kind = "int" if index else "text"
        bound = f"{params.add(int(key) if index else key)}::{kind}"
        out = f"({out} {arrow} {bound})"
    return out


def _computed(table: Table, name: str) -> Computed | None:
    """A computed column (a function of the row) named *name*; whether the
    caller may use it was decided when the query was planned."""
    if name in table.columns:
        return None
    found: Computed | None = table.functions.get(name)
    return found if found is not None and found.ret_table is None else None


def value_type(column: Column) -> str:
    """The SQL type to cast a text value to for *column*, without length limits.

    Why without the typmod: ``'abcdef'::varchar(3)`` silently truncates, so a
    filter value would match rows it should not.  ``format_type`` output is
    produced by PostgreSQL from the catalog (quoted and schema-qualified as
    needed), never by a user.
    """
    if column.base_type in ("bpchar", "_bpchar"):
        return "bpchar[]" if column.base_type.startswith("_") else "bpchar"
    if column.category in ("E", "C", "U") or column.type_name.endswith('"'):
        return column.type_name
    name = _TYPMOD.sub("", column.type_name)
    if column.category != "A" and _PLAIN_TYPE.match(column.base_type):
        # Domains resolve to their base type so filter values skip domain checks.
        return column.base_type
    return name


def _is_text(column: Column) -> bool:
    return column.base_type in _TEXT_TYPES


def bind_text(params: Params, column: Column, text: str | None) -> str:
    """``$n::text`` cast to the column's type."""
    placeholder = f"{params.add(text)}::text"
    return placeholder if _is_text(column) else f"{placeholder}::{value_type(column)}"


def bind_array(params: Params, element: Column, items: tuple[str | None, ...]) -> str:
    """``$n::text[]`` cast to an array of *element*'s type."""
    placeholder = f"{params.add(list(items))}::text[]"
    if _is_text(element):
        return placeholder
    return f"{placeholder}::{value_type(element)}[]"


def _array_cast(params: Params, column: Column, items: tuple[str | None, ...]) -> str:
    """A text[] parameter cast to an array column's own type."""
    placeholder = f"{params.add(list(items))}::text[]"
    target = value_type(column)
    return placeholder if target in ("text[]", "_text") else f"{placeholder}::{target}"


def bind_value(params: Params, column: Column, value: object) -> str:
    """Bind a Python value for a write (``SET col = ...``); ``None`` is NULL."""
    if value is None:
        return bind_text(params, column, None)
    if column.category == "A" and isinstance(value, list | tuple):
        items = tuple(None if v is None else to_literal(v) for v in value)
        return _array_cast(params, column, items)
    return bind_text(params, column, to_literal(value))


def render_filter(filt: Filter, table: Table, alias: str, params: Params) -> str:
    """A filter tree as a SQL boolean expression over ``alias``'s columns.

    Raises :class:`UnknownColumnError` for names not in *table* and
    :class:`FilterError` for operators that cannot apply to the column's type.
    """
    if isinstance(filt, Condition):
        return _render_condition(filt, table, alias, params)
    joiner = " OR " if isinstance(filt, Or) else " AND "
    parts = [render_filter(item, table, alias, params) for item in filt.items]
    body = "(" + joiner.join(parts) + ")"
    return f"NOT {body}" if filt.negate else body


def _type_error(cond: Condition, column: Column, needs: str) -> FilterError:
    return FilterError(
        f"'{cond.op}' needs {needs}; column {column.name!r} has type "
        f"{column.type_name} (in filter {str(cond)!r})."
    )


def _render_condition(cond: Condition, table: Table, alias: str, params: Params) -> str:
    column = path_column(table, cond.column)
    ref = column_sql(table, alias, cond.column, params)
    op = cond.op
    if op == "is":
        negation = "NOT " if cond.negate else ""
        if cond.value is None:
            return f"{ref} IS {negation}NULL"
        if column.base_type != "bool":
            raise _type_error(cond, column, "a boolean column")
        keyword = {"true": "TRUE", "false": "FALSE", "unknown": "UNKNOWN"}[
            str(cond.value)
        ]
        return f"{ref} IS {negation}{keyword}"
    if cond.arg in ("any", "all"):
        sql = _quantified(cond, column, ref, params)
    elif op == "in":
        items = cond.value if isinstance(cond.value, tuple) else (str(cond.value),)
        sql = f"{ref} = ANY({bind_array(params, column, items)})"
    elif op in ("like", "ilike", "match", "imatch"):
        if column.category != "S":
            raise _type_error(cond, column, "a text column")
        pattern = str(cond.value)
        if op in ("like", "ilike"):
            pattern = pattern.replace("*", "%")
        sql = f"{ref} {OPERATORS[op]} {params.add(pattern)}::text"
    elif op in ("cs", "cd", "ov"):
        if op == "ov" and column.category not in ("A", "R"):
            raise _type_error(cond, column, "an array or range column")
        sql = f"{ref} {OPERATORS[op]} {_containment_value(cond, column, params)}"
    elif op in _RANGE_OPS:
        if column.category != "R":
            raise _type_error(cond, column, "a range column")
        if isinstance(cond.value, tuple):
            raise FilterError(f"'{op}' takes a range like [1,5), in {str(cond)!r}")
        sql = f"{ref} {OPERATORS[op]} {bind_text(params, column, cond.value)}"
    elif op in TEXT_SEARCH:
        sql = _text_search(cond, column, ref, params)
    else:
        if isinstance(cond.value, tuple):
            raise FilterError(f"'{op}' takes one value, got a list in {str(cond)!r}")
        sql = f"{ref} {OPERATORS[op]} {bind_text(params, column, cond.value)}"
    return f"NOT ({sql})" if cond.negate else sql


def _quantified(cond: Condition, column: Column, ref: str, params: Params) -> str:
    """``like(any).{a*,b*}``: ``column LIKE ANY(array)``; ``eq(all).{...}``:
    ``column = ALL(array)`` (the values cast to the column's type)."""
    items = cond.value if isinstance(cond.value, tuple) else (str(cond.value),)
    quantifier = str(cond.arg).upper()
    op = cond.op
    if op in ("like", "ilike", "match", "imatch"):
        if column.category != "S":
            raise _type_error(cond, column, "a text column")
        if op in ("like", "ilike"):
            items = tuple(item.replace("*", "%") for item in items)
        return f"{ref} {OPERATORS[op]} {quantifier}({params.add(list(items))}::text[])"
    return f"{ref} {OPERATORS[op]} {quantifier}({bind_array(params, column, items)})"


#: Range operators: strictly left/right of, does not extend right/left of,
#: adjacent to (PostgREST's sl, sr, nxr, nxl, adj).
_RANGE_OPS = frozenset({"sl", "sr", "nxl", "nxr", "adj"})


def _text_search(cond: Condition, column: Column, ref: str, params: Params) -> str:
    """``fts(config).query``: ``column @@ to_tsquery(config, query)``; a text
    column is searched through ``to_tsvector`` (with the same configuration)."""
    if isinstance(cond.value, tuple) or cond.value is None:
        raise FilterError(f"'{cond.op}' takes one search text, in {str(cond)!r}")
    config = f"{params.add(cond.arg)}::text::regconfig, " if cond.arg else ""
    query = f"{OPERATORS[cond.op]}({config}{params.add(cond.value)}::text)"
    if column.base_type == "tsvector":
        document = ref
    elif column.category == "S":
        again = f"{params.add(cond.arg)}::text::regconfig, " if cond.arg else ""
        document = f"to_tsvector({again}{ref})"
    else:
        raise _type_error(cond, column, "a tsvector or text column")
    return f"{document} @@ {query}"


def _containment_value(cond: Condition, column: Column, params: Params) -> str:
    value = cond.value
    if column.category == "A":
        if isinstance(value, tuple):
            return _array_cast(params, column, value)
        return bind_text(params, column, value)
    if column.base_type == "jsonb":
        if isinstance(value, tuple):
            # cs.{a,b} on a jsonb column means the JSON array ["a","b"].
            value = orjson.dumps(list(value)).decode()
        return bind_text(params, column, value)
    if column.category == "R" and isinstance(value, str):
        return bind_text(params, column, value)
    raise _type_error(cond, column, "an array, jsonb or range column")
