"""Filters built from Python values (the query builder's ``.eq("id", 1)``),
checked like parsed ones.

Why apart from the grammar: a value from Python becomes the text PostgreSQL
would read (:func:`to_literal`), so a filter built in code and the same filter
written in a URL are one :class:`~pgpulse.routing.filters.Condition`.
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid as _uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal

import orjson

from pgpulse.exceptions import FilterError
from pgpulse.routing.filters import _IS_VALUES, OPERATORS, TEXT_SEARCH, Condition

__all__ = ["condition", "to_literal"]

_CONFIG = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


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


def condition(
    column: str, op: str, value: object, negate: bool = False, arg: str | None = None
) -> Condition:
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
    elif op in ("cs", "cd", "ov"):
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
    if arg is not None and (op not in TEXT_SEARCH or not _CONFIG.match(arg)):
        raise FilterError(
            f"a text search configuration (like 'english') goes with fts, plfts, "
            f"phfts or wfts only, got {op!r} with {arg!r} for column {column!r}."
        )
    return Condition(column, op, literal, negate, arg)
