"""A live query as asked: the REST grammar, normalized so equal queries share.

Why normalize: every client asking for the same rows (same table, select,
filters, order and limit, under the same policy context) must share one
server-side state and receive the same bytes; filter parameters are an AND, so
their order in the URL does not matter.  Rows are keyed by the table's primary
key (patches name rows by it), so the key columns must be selected, and the
order is made total by the key (ties broken by key), so that "the rows of the
query, in order" is one list, not several.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pgpulse.catalog import Table
from pgpulse.exceptions import ValidationError
from pgpulse.query._params import parse_order
from pgpulse.query._select import Field, Star, parse_select

__all__ = ["MAX_LIMIT", "LiveQuery"]

#: The most rows one live query keeps (its state is held in memory and
#: diffed on every refresh).
MAX_LIMIT = 10_000

_RESERVED = {"table", "select", "order", "limit", "last_event_id", "access_token"}


@dataclass(frozen=True)
class LiveQuery:
    """One live query: what to read, in the REST grammar."""

    table: str
    select: str
    filters: tuple[tuple[str, str], ...]
    """Filters and embedded modifiers (``nodes.order``...), sorted."""
    order: str | None
    limit: int | None

    @classmethod
    def from_params(cls, items: Iterable[tuple[str, str]]) -> LiveQuery:
        """From URL parameters (``table=documents&select=...&status=eq.x``)."""
        table = select = order = limit = None
        filters: list[tuple[str, str]] = []
        for key, value in items:
            if key == "table":
                table = value
            elif key == "select":
                select = value
            elif key == "order":
                order = value
            elif key == "limit":
                limit = value
            elif key not in _RESERVED:
                filters.append((key, value))
        if not table:
            raise ValidationError(
                "name the table: /v1/live?table=documents (then select=, "
                "filters, order= and limit= as for /v1/rest)"
            )
        count = None
        if limit is not None:
            if not limit.isdigit():
                raise ValidationError(
                    f"limit must be a non-negative integer, got {limit!r}"
                )
            count = int(limit)
            if count > MAX_LIMIT:
                raise ValidationError(
                    f"limit {count} is above {MAX_LIMIT:,}, the most rows a live "
                    "query keeps; page with a smaller limit"
                )
        return cls(table, select or "*", tuple(sorted(filters)), order, count)

    @property
    def params(self) -> list[tuple[str, str]]:
        """As URL parameters for the query builder (without the order)."""
        out = [("select", self.select), *self.filters]
        # Without a limit, one row more than a live query keeps: a result that
        # large is refused (:meth:`check_size`) instead of held in memory.
        limit = MAX_LIMIT + 1 if self.limit is None else self.limit
        out.append(("limit", str(limit)))
        return out

    def check_size(self, rows: int) -> None:
        if self.limit is None and rows > MAX_LIMIT:
            raise ValidationError(
                f"the live query on {self.table!r} returns more than "
                f"{MAX_LIMIT:,} rows, the most a live query keeps; add a filter "
                "or a limit"
            )

    def key(self, context: Any = None) -> str:
        """Equal for queries that must return the same rows to the same
        viewer (*context*: the caller's policy context, JSON-serializable)."""
        body = orjson.dumps(
            [self.table, self.select, self.filters, self.order, self.limit, context],
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(body).hexdigest()[:16]

    def order_terms(self, table: Table) -> list[tuple[str, bool, bool | None]]:
        """``(column, desc, nulls_first)`` of the order, completed with the
        primary key so that no two rows tie."""
        terms = list(parse_order(self.order)) if self.order else []
        named = {column for column, _desc, _nulls in terms}
        terms.extend((k, False, None) for k in table.primary_key if k not in named)
        return terms

    def check_key(self, table: Table) -> None:
        """Rows are named by the primary key: it must be selected."""
        if not table.primary_key:
            raise ValidationError(
                f"table {table.name!r} has no primary key; a live query names "
                "its rows by their key"
            )
        items = parse_select(self.select)
        if any(isinstance(i, Field) and i.aggregate for i in items):
            raise ValidationError(
                "a live query names its rows by their primary key, so it cannot "
                "aggregate them; select the rows, or read aggregates over REST"
            )
        names = _selected(items)
        if names is None:
            return
        missing = [k for k in table.primary_key if k not in names]
        if missing:
            raise ValidationError(
                f"a live query names its rows by the primary key of "
                f"{table.name!r}: add {', '.join(missing)} to select"
            )


def _selected(items: Sequence[Any]) -> set[str] | None:
    """The root's selected output names, or None with ``*``."""
    names: set[str] = set()
    for item in items:
        if isinstance(item, Star):
            return None
        if isinstance(item, Field) and "->" not in item.name:
            names.add(item.alias or item.name)
    return names
