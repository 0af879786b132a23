"""One committed change as read from the log (``pgpulse.changes``).

Why keep PostgreSQL's JSON text instead of parsed rows: with thousands of
subscribers, per-client JSON is the dominant cost, so the text is spliced into
event bytes as it is (:mod:`pgpulse.routing.wire`) and rows are parsed only
when a filtered subscription needs to look at values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Change"]


@dataclass(eq=False)
class Change:
    """A committed change read from ``pgpulse.changes``."""

    id: int
    xid: int
    table: str
    """Schema-qualified table name (``public.documents``)."""
    name: str
    """Name shown to clients (``documents`` for the public schema)."""
    op: str
    pk: str
    """JSON text of the primary key."""
    row: str | None
    """JSON text of the new row (None for DELETE, or in keys-only mode)."""
    old: str | None
    ts: str
    """JSON string (quoted) of the capture time."""
    event_id: str
    """The cursor of this event (see :mod:`pgpulse.log.cursor`)."""
    _row: Any = field(default=None, repr=False)
    _old: Any = field(default=None, repr=False)
    _pk: Any = field(default=None, repr=False)
    _encoded: dict[Any, bytes] = field(default_factory=dict, repr=False)
    """Wire encodings built so far (:func:`pgpulse.routing.wire.encoded`)."""
    _sse_full: bytes | None = field(default=None, repr=False)
    """The most common encoding (the full change over SSE), kept apart."""
    verdicts: dict[str, list[bool] | str] | None = field(default=None, repr=False)
    """Filters evaluated by PostgreSQL: key → [new row selected, old row
    selected], or why the filter cannot be evaluated for its viewer at all
    (:mod:`pgpulse.routing.db_filters`)."""
    viewed: frozenset[str] | None = field(default=None, repr=False)
    """Row-level security filters evaluated on this change: for these only
    the rows a viewer may see are in :attr:`verdicts`, absent means neither
    (:mod:`pgpulse.routing.row_security`)."""
    _keys: Any = field(default=None, repr=False)
    """The rows as compared by the routing (:func:`pgpulse.routing.bus.row_keys`)."""

    def row_dict(self) -> dict[str, Any] | None:
        if self.row is None:
            return None
        if self._row is None:
            self._row = orjson.loads(self.row)
        return self._row  # type: ignore[no-any-return]

    def old_dict(self) -> dict[str, Any] | None:
        if self.old is None:
            return None
        if self._old is None:
            self._old = orjson.loads(self.old)
        return self._old  # type: ignore[no-any-return]

    def pk_dict(self) -> dict[str, Any]:
        if self._pk is None:
            self._pk = orjson.loads(self.pk)
        return self._pk  # type: ignore[no-any-return]
