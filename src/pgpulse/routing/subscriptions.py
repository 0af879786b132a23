"""Turning ``documents:shipment_id=eq.42;status=in.(a,b)`` into a checked subscription.

Why here: every name in a subscription is resolved against the catalog and the
capture options of the table before the client is accepted, so a typo is a clear
400 and a filter can never probe a column that is not published (filtering on
``password_hash`` would leak it one bit at a time).

Then PostgreSQL has the last word on the filter itself (:func:`resolve`): each
condition is rendered with the REST endpoint's SQL and evaluated once on a row
of NULLs of the table's type, so a literal or an operator PostgreSQL would
refuse is refused here with PostgreSQL's own message, and every literal the
stream compares in Python comes back spelled by PostgreSQL
(``to_jsonb($1::text::type)``: ``1e2``,
``'{A0EEBC99-...}'``, a zone-less ``timestamptz`` read in the session's time
zone, ``today``).  Subscriptions and REST therefore accept the same filters,
and the stream compares what PostgreSQL would compare.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import asyncpg

from pgpulse.auth.access import OPEN, Access
from pgpulse.capture import WatchedTable
from pgpulse.catalog import Catalog, Table, quote_ident
from pgpulse.exceptions import (
    ConfigurationError,
    FilterError,
    UnknownColumnError,
    UnknownTableError,
    ValidationError,
)
from pgpulse.query._sql import Params, bind_array, bind_text, render_filter
from pgpulse.routing.db_filters import DatabaseFilter, Viewer
from pgpulse.routing.filters import Condition, Filter, columns_of, parse_filters
from pgpulse.routing.matching import (
    JSON_TYPES,
    Tri,
    compile_filter,
    conditions,
    evaluable,
    needs_literal,
)
from pgpulse.routing.values import KeyFunction, RowKeys, key_function

__all__ = [
    "SubscriptionRequest",
    "SubscriptionSpec",
    "build_spec",
    "parse_subscription",
    "published_columns",
    "resolve",
]

MAX_SUBSCRIPTION_LENGTH = 4096


@dataclass(frozen=True)
class SubscriptionRequest:
    """A subscription whose names are checked, before PostgreSQL checks its
    filter (:func:`resolve`)."""

    text: str
    table: Table
    name: str
    """Name as shown to clients."""
    filters: tuple[Filter, ...]
    """The client's filters, then its policy's (all ANDed)."""
    keys_only: bool
    columns: frozenset[str] | None = None
    """The columns the caller may see (None: every published column)."""
    viewer: Viewer | None = None
    """Row-level security by PostgreSQL for this role and claims."""

    @property
    def key(self) -> tuple[str, str, str]:
        """Same key, same compiled subscription (for caching)."""
        columns = None if self.columns is None else sorted(self.columns)
        return (
            self.table.qualified,
            self.text,
            f"{self.filters!r}|{columns!r}|{self.viewer!r}",
        )


@dataclass(frozen=True)
class SubscriptionSpec:
    """A validated subscription: a watched table and optional filters."""

    text: str
    table: str
    """Schema-qualified name, as in the change log."""
    name: str
    """Name as shown to clients."""
    filters: tuple[Filter, ...]
    predicate: Tri | None
    """The filters, decided in Python (None: unfiltered, or ``db_filter``)."""
    db_filter: DatabaseFilter | None = None
    """The filters, decided by PostgreSQL once per batch."""
    index_column: str | None = None
    """Column of an ``eq`` filter used to route without scanning."""
    index_value: Any = None
    index_key: KeyFunction | None = None
    keys_only: bool = False
    columns: frozenset[str] | None = None
    """Events carry only these columns (a policy's allow-list)."""

    @property
    def filtered(self) -> bool:
        return self.predicate is not None or self.db_filter is not None


def published_columns(table: Table, watched: WatchedTable) -> list[str]:
    if watched.publish == "keys":
        return list(table.primary_key)
    if watched.columns is not None:
        return [c for c in table.columns if c in watched.columns]
    return [c for c in table.columns if c not in watched.exclude]


def parse_subscription(
    text: str,
    catalog: Catalog,
    watched: Mapping[str, WatchedTable],
    access: Access = OPEN,
) -> SubscriptionRequest:
    """Parse one ``sub`` value and check its names and the caller's access;
    raises a :class:`ValidationError` or an :class:`AuthError` (then
    :func:`resolve` it)."""
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
    display = catalog.display_name(table)
    rules = access.rules(table, display)
    filters = tuple(parse_filters(filter_text)) if filter_text.strip() else ()
    captured = published_columns(table, info)
    visible = [c for c in captured if rules.columns is None or c in rules.columns]
    for filt in filters:
        for column in columns_of(filt):
            if column not in visible:
                # Excluded and hidden columns are unknown: a filter must not
                # probe them, and the message must not name them.
                raise UnknownColumnError(display, column, visible)
        _check_json(filt, table, negated=False, source=text)
    for filt in rules.filters:
        for column in columns_of(filt):
            if column not in captured:
                raise ConfigurationError(
                    f"the policy of table {display!r} filters on column {column!r}, "
                    "which is not captured; watch the table with that column"
                )
        _check_json(filt, table, negated=False, source=f"the policy of {display!r}")
    return SubscriptionRequest(
        text,
        table,
        display,
        filters + rules.filters,
        info.publish == "keys",
        rules.columns,
        rules.viewer,
    )


def _check_json(filt: Filter, table: Table, negated: bool, source: str) -> None:
    """The log writes SQL NULL and JSON ``null`` alike (``to_jsonb`` of the
    row), so on json/jsonb columns only conditions that select neither are
    accepted: ``eq``, ``in`` and ``cs`` with a non-null value, not negated."""
    if not isinstance(filt, Condition):
        for item in filt.items:
            _check_json(item, table, negated != filt.negate, source)
        return
    column = table.column(filt.column)
    if column.base_type not in JSON_TYPES:
        return
    values = filt.value if isinstance(filt.value, tuple) else (filt.value,)
    if (
        negated
        or filt.negate
        or filt.op not in ("eq", "in", "cs")
        or any(v is None or v.strip() == "null" for v in values)
    ):
        raise FilterError(
            f"the stream cannot evaluate {str(filt)!r} in {source!r}: the change "
            f"log records SQL NULL and JSON null alike for {column.type_name} "
            f"column {column.name!r}, so only eq, in and cs with a non-null value, "
            "not negated, are exact there. Filter on another column, or read "
            "through /v1/rest."
        )


async def resolve(request: SubscriptionRequest, conn: Any) -> SubscriptionSpec:
    """Check *request*'s filter with PostgreSQL and compile it (see the module
    docstring); raises :class:`FilterError` with PostgreSQL's message."""
    if not request.filters:
        return build_spec(request, {})
    table = request.table
    params = Params()
    # Each condition alone: in one expression, ``false and ...`` would leave
    # later literals unchecked on the NULL row.
    checks = [
        render_filter(cond, table, "t0", params)
        for filt in request.filters
        for cond in conditions(filt)
    ]
    extra: list[str] = []
    wanted: list[Condition] = []
    python = request.viewer is None and all(
        evaluable(f, table) for f in request.filters
    )
    for filt in request.filters:
        for cond in conditions(filt):
            column = table.column(cond.column)
            if cond.op in ("like", "ilike") and column.category == "S":
                # A bad pattern (or a collation LIKE cannot use) fails only
                # on a value: try it on an empty one of the column's collation.
                pattern = params.add(str(cond.value).replace("*", "%"))
                ref = f"coalesce(\"t0\".{quote_ident(column.name)}, '')"
                extra.append(f"({ref} {cond.op} {pattern}::text) as p{len(extra)}")
            elif python and needs_literal(cond):
                if isinstance(cond.value, tuple):
                    expr = bind_array(params, column, cond.value)
                else:
                    expr = bind_text(params, column, cond.value)
                extra.append(f"to_jsonb({expr})::text as l{len(wanted)}")
                wanted.append(cond)
    columns = ", ".join([*(f"({c})" for c in checks), *extra])
    # A row of NULLs the planner cannot see through (a constant NULL would
    # let it fold every strict comparison away, literal casts included), of
    # the table's type (no SELECT privilege needed on the table).
    sql = (
        f"select {columns} "
        f"from jsonb_populate_record(null::{table.sql}, '{{}}'::jsonb) as \"t0\""
    )

    try:
        row = await conn.fetchrow(sql, *params.values)
    except asyncpg.PostgresError as exc:
        state = getattr(exc, "sqlstate", "") or ""
        if not state.startswith(_REFUSED):
            raise
        message = str(exc).split("\n", 1)[0]
        raise FilterError(
            f"PostgreSQL refuses the filter of {request.text!r}: {message}"
        ) from None
    literals = {
        cond: json.loads(row[f"l{i}"], parse_float=Decimal)
        for i, cond in enumerate(wanted)
    }
    return build_spec(request, literals)


#: SQLSTATE classes of a filter PostgreSQL refuses (bad value, bad operator
#: for the type, unsupported feature): the client's 400, not the server's 500.
_REFUSED = ("22", "42", "0A")


def build_spec(
    request: SubscriptionRequest, literals: Mapping[Condition, Any]
) -> SubscriptionSpec:
    """Compile *request* with its literals as PostgreSQL spells them in JSON."""
    table = request.table
    spec = SubscriptionSpec(
        text=request.text,
        table=table.qualified,
        name=request.name,
        filters=request.filters,
        predicate=None,
        keys_only=request.keys_only,
        columns=request.columns,
    )
    if request.viewer is not None or not all(
        evaluable(f, table) for f in request.filters
    ):
        db_filter = DatabaseFilter(table, request.filters, request.viewer)
        return replace(spec, db_filter=db_filter)
    if not request.filters:
        return spec
    predicates = [compile_filter(f, table, literals) for f in request.filters]
    predicate: Tri
    if len(predicates) == 1:
        predicate = predicates[0]
    else:

        def predicate(row: RowKeys) -> bool | None:
            unknown = False
            for p in predicates:
                value = p(row)
                if value is False:
                    return False
                if value is None:
                    unknown = True
            return None if unknown else True

    spec = replace(spec, predicate=predicate)
    for filt in request.filters:
        if isinstance(filt, Condition) and filt.op == "eq" and not filt.negate:
            column = table.column(filt.column)
            function = key_function(column.base_type, column.category)
            if function is not None and filt in literals:
                return replace(
                    spec,
                    index_column=filt.column,
                    index_value=function(literals[filt]),
                    index_key=function,
                )
    return spec
