"""Evaluating filter trees in Python, with SQL's semantics.

Why separate from the grammar (:mod:`pgpulse.routing.filters`): the bus must decide, for
every change and every filtered subscription, whether a row matches, without a
round trip to PostgreSQL.  Literals are coerced once to the column's type
(``shipment_id=eq.42`` compares as an integer, timestamps as instants), and
comparisons with NULL are unknown, as in SQL, so a subscription matches exactly
the rows the same filter selects in a query.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeAlias

from pgpulse.exceptions import FilterError
from pgpulse.routing.filters import Condition, Filter, Or

__all__ = ["Coerce", "Predicate", "coercer", "compile_filter"]

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
