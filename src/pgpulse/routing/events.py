"""One change from the log, and its wire encodings, each built once.

Why: with thousands of subscribers, per-client JSON is the dominant cost.  A
:class:`Change` keeps the JSON text PostgreSQL produced (``row::text``) and
splices it into the event bytes without parsing; the bytes for each
(variant, transport) pair are built on first use and shared by every client that
receives that variant.  Rows are parsed (orjson) only when a filtered
subscription needs to look at values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Change", "Variant", "control_event"]


class Variant(enum.IntEnum):
    """How a change is shown to a subscriber, given its filters."""

    FULL = 0
    """The change as it happened."""
    MOVED_IN = 1
    """An UPDATE moved the row into the filter: shown as an INSERT of the new row."""
    MOVED_OUT = 2
    """An UPDATE moved the row out of the filter: shown as a DELETE of the old row."""


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
    _encoded: dict[tuple[Variant, str], bytes] = field(default_factory=dict, repr=False)
    _sse_full: bytes | None = field(default=None, repr=False)

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

    def data(self, variant: Variant = Variant.FULL) -> bytes:
        """The JSON payload of the event for *variant*."""
        op, row, old, moved = self.op, self.row, self.old, ""
        if variant is Variant.MOVED_IN:
            op, old, moved = "INSERT", None, ',"moved":true'
        elif variant is Variant.MOVED_OUT:
            op, row, moved = "DELETE", None, ',"moved":true'
        return (
            f'{{"table":{orjson.dumps(self.name).decode()},"op":"{op}",'
            f'"pk":{self.pk},"row":{row or "null"},"old":{old or "null"},'
            f'"ts":{self.ts}{moved}}}'
        ).encode()

    def encoded(self, variant: Variant, transport: str) -> bytes:
        """Wire bytes for *transport* (``sse`` or ``ws``), built once and shared."""
        # The common case (full change over SSE) skips the dict: this runs once
        # per delivery, i.e. changes x subscribers times.
        if variant is Variant.FULL and transport == "sse":
            full = self._sse_full
            if full is None:
                full = self._sse_full = self._build(variant, transport)
            return full
        key = (variant, transport)
        cached = self._encoded.get(key)
        if cached is None:
            cached = self._encoded[key] = self._build(variant, transport)
        return cached

    def _build(self, variant: Variant, transport: str) -> bytes:
        data = self.data(variant)
        if transport == "sse":
            cached = (
                b"id: "
                + self.event_id.encode()
                + b"\nevent: change\ndata: "
                + data
                + b"\n\n"
            )
        else:
            cached = (
                b'{"type":"change","id":"'
                + self.event_id.encode()
                + b'","data":'
                + data
                + b"}"
            )
        return cached


def control_event(
    transport: str, event: str, data: dict[str, Any], event_id: str | None = None
) -> bytes:
    """A ``ready``/``reset``/``error`` event for one client."""
    if transport == "sse":
        head = f"id: {event_id}\n" if event_id is not None else ""
        return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"
    return orjson.dumps({"type": event, **data})
