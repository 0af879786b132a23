"""PostgREST URL parameters → builder calls.

``?select=id,nodes(id)&status=eq.final&nodes.order=position.desc&limit=10`` is
the same query as ``.select("id,nodes(id)").eq("status", "final")
.order("position", desc=True, foreign_table="nodes").limit(10)``.  The REST
endpoint uses this; so can anything else that takes queries as URLs.
"""

from __future__ import annotations

from collections.abc import Iterable

from pgpulse.query._builder import QueryBuilder
from pgpulse.query._errors import QueryError
from pgpulse.routing.filters import parse_filter, split_top

__all__ = ["RESERVED_PARAMS", "apply_params", "parse_order"]

_LOGIC = ("not.or", "not.and", "or", "and")
_SHAPING = ("order", "limit", "offset")
#: Parameter names that are not column filters.
RESERVED_PARAMS = frozenset({"select", *_SHAPING, *_LOGIC})

_MODIFIERS = {
    "asc": ("desc", False),
    "desc": ("desc", True),
    "nullsfirst": ("nulls", True),
    "nullslast": ("nulls", False),
}


def parse_order(text: str) -> list[tuple[str, bool, bool | None]]:
    """Read ``order=pages.desc.nullslast,id`` as (column, desc, nulls_first) items.

    ``nulls_first`` is ``None`` when not given (PostgreSQL's default applies).
    """
    out: list[tuple[str, bool, bool | None]] = []
    for raw in split_top(text):
        item = raw.strip()
        column, *modifiers = item.split(".")
        if not column:
            raise QueryError(
                f"order={text!r} has an empty column; expected e.g. "
                "'order=created_at.desc,id'."
            )
        desc = False
        nulls: bool | None = None
        for modifier in modifiers:
            if modifier not in _MODIFIERS:
                raise QueryError(
                    f"unknown order modifier {modifier!r} in order={text!r}; use "
                    "asc, desc, nullsfirst or nullslast."
                )
            kind, flag = _MODIFIERS[modifier]
            if kind == "desc":
                desc = flag
            else:
                nulls = flag
        out.append((column, desc, nulls))
    return out


def _integer(key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0 or not value.strip().isdigit():
        raise QueryError(f"{key} must be a non-negative integer, got {value!r}")
    return number


def _split_key(key: str) -> tuple[str | None, str]:
    """``nodes.checks.order`` → (``"nodes.checks"``, ``"order"``)."""
    for name in (*_LOGIC, *_SHAPING):
        if key == name:
            return None, name
        if key.endswith("." + name):
            return key[: -len(name) - 1], name
    return None, key


def apply_params(
    builder: QueryBuilder, items: Iterable[tuple[str, str]]
) -> QueryBuilder:
    """Apply URL query parameters (``select``, filters, ``order``...) to *builder*.

    Raises :class:`~pgpulse.exceptions.ValidationError` subclasses naming the
    parameter at fault.
    """
    for key, value in items:
        if key == "select":
            builder = builder.select(value)
            continue
        path, name = _split_key(key)
        if name == "order":
            for column, desc, nulls in parse_order(value):
                builder = builder.order(
                    column, desc=desc, nulls_first=nulls, foreign_table=path
                )
        elif name == "limit":
            builder = builder.limit(_integer(key, value), foreign_table=path)
        elif name == "offset":
            builder = builder.offset(_integer(key, value), foreign_table=path)
        elif name in _LOGIC:
            builder = builder.where(parse_filter(name, value), reference_table=path)
        else:
            builder = builder.where(parse_filter(key, value))
    return builder
