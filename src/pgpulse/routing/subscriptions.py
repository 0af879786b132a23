"""Turning ``documents:shipment_id=eq.42;status=in.(a,b)`` into a checked subscription.

Why here: every name in a subscription is resolved against the catalog and the
capture options of the table before the client is accepted, so a typo is a clear
400 and a filter can never probe a column that is not published (filtering on
``password_hash`` would leak it one bit at a time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgpulse.capture import WatchedTable
from pgpulse.catalog import Catalog, Table
from pgpulse.exceptions import FilterError, UnknownTableError, ValidationError
from pgpulse.routing.filters import Condition, Filter, columns_of, parse_filters
from pgpulse.routing.matching import Coerce, Predicate, coercer, compile_filter

__all__ = ["SubscriptionSpec", "parse_subscription"]

MAX_SUBSCRIPTION_LENGTH = 4096


@dataclass(frozen=True)
class SubscriptionSpec:
    """A validated subscription: a watched table and optional filters."""

    text: str
    table: str
    """Schema-qualified name, as in the change log."""
    name: str
    """Name as shown to clients."""
    filters: tuple[Filter, ...]
    predicate: Predicate | None
    index_column: str | None = None
    """Column of an ``eq`` filter used to route without scanning."""
    index_value: Any = None
    index_coerce: Coerce | None = None
    keys_only: bool = False


def published_columns(table: Table, watched: WatchedTable) -> list[str]:
    if watched.publish == "keys":
        return list(table.primary_key)
    if watched.columns is not None:
        return [c for c in table.columns if c in watched.columns]
    return [c for c in table.columns if c not in watched.exclude]


def parse_subscription(
    text: str, catalog: Catalog, watched: Mapping[str, WatchedTable]
) -> SubscriptionSpec:
    """Parse and validate one ``sub`` value; raises a :class:`ValidationError`."""
    if not text or len(text) > MAX_SUBSCRIPTION_LENGTH:
        raise ValidationError(
            "a subscription looks like 'table' or 'table:column=op.value' "
            f"(at most {MAX_SUBSCRIPTION_LENGTH} characters)"
        )
    name, _, filter_text = text.partition(":")
    name = name.strip()
    table = catalog.table(name)
    info = watched.get(table.qualified)
    if info is None:
        raise UnknownTableError(
            name,
            sorted(
                w.split(".", 1)[1] if w.startswith("public.") else w for w in watched
            ),
            why=f"is not watched; run `pgpulse watch {table.name}` to publish it",
        )
    filters = tuple(parse_filters(filter_text)) if filter_text.strip() else ()
    display = catalog.display_name(table)
    if not filters:
        return SubscriptionSpec(text, table.qualified, display, (), None)
    published = published_columns(table, info)
    types: dict[str, tuple[str, str, str]] = {}
    for filt in filters:
        for column in columns_of(filt):
            col = table.column(column)
            if column not in published:
                why = (
                    "publishes primary keys only"
                    if info.publish == "keys"
                    else "does not publish it"
                )
                raise FilterError(
                    f"cannot filter on column {column!r}: table {display!r} {why}. "
                    f"Filterable columns: {', '.join(published)}."
                )
            types[column] = (col.base_type, col.category, col.type_name)
    predicates = [compile_filter(f, types) for f in filters]
    predicate: Predicate
    if len(predicates) == 1:
        predicate = predicates[0]
    else:

        def predicate(row: Mapping[str, Any]) -> bool:
            return all(p(row) for p in predicates)

    index_column = index_value = index_coerce = None
    for filt in filters:
        if isinstance(filt, Condition) and filt.op == "eq" and not filt.negate:
            base_type, category, _ = types[filt.column]
            coerce = coercer(base_type, category)
            if coerce is not None and isinstance(filt.value, str):
                index_column, index_coerce = filt.column, coerce
                index_value = coerce(filt.value)
                break
    return SubscriptionSpec(
        text,
        table.qualified,
        display,
        filters,
        predicate,
        index_column,
        index_value,
        index_coerce,
        keys_only=info.publish == "keys",
    )
