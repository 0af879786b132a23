"""Wire encodings of a change (SSE and WebSocket frames), each built once.

Why: with thousands of subscribers, per-client JSON is the dominant cost.  The
bytes for each (variant, transport) pair are built on first use from the JSON
text PostgreSQL produced, cached on the :class:`~pgpulse.log.change.Change`,
and shared by every client that receives that variant.
"""

from __future__ import annotations

import enum
from typing import Any

import orjson

from pgpulse.log.change import Change

__all__ = ["Variant", "control_event", "encoded", "encoded_tagged", "payload"]


class Variant(enum.IntEnum):
    """How a change is shown to a subscriber, given its filters."""

    FULL = 0
    """The change as it happened."""
    MOVED_IN = 1
    """An UPDATE moved the row into the filter: shown as an INSERT of the new row."""
    MOVED_OUT = 2
    """An UPDATE moved the row out of the filter: shown as a DELETE of the old row."""


def payload(change: Change, variant: Variant = Variant.FULL) -> bytes:
    """The JSON payload of the event for *variant*."""
    op, row, old, moved = change.op, change.row, change.old, ""
    if variant is Variant.MOVED_IN:
        op, old, moved = "INSERT", None, ',"moved":true'
    elif variant is Variant.MOVED_OUT:
        op, row, moved = "DELETE", None, ',"moved":true'
    return (
        f'{{"table":{orjson.dumps(change.name).decode()},"op":"{op}",'
        f'"pk":{change.pk},"row":{row or "null"},"old":{old or "null"},'
        f'"ts":{change.ts}{moved}}}'
    ).encode()


def encoded(change: Change, variant: Variant, transport: str) -> bytes:
    """Wire bytes for *transport* (``sse`` or ``ws``), built once and shared."""
    # The common case (full change over SSE) skips the dict: this runs once
    # per delivery, i.e. changes x subscribers times.
    if variant is Variant.FULL and transport == "sse":
        full = change._sse_full
        if full is None:
            full = change._sse_full = _build(change, variant, transport)
        return full
    key = (variant, transport)
    cached = change._encoded.get(key)
    if cached is None:
        cached = change._encoded[key] = _build(change, variant, transport)
    return cached


def encoded_tagged(
    change: Change, variant: Variant, transport: str, tags: dict[str, str]
) -> bytes:
    """The event for a client with several subscriptions on the change's table:
    ``subs`` maps each subscription that sees the change (its place in
    ``sub=``, or its WebSocket ref) to the operation it sees, so the client
    routes without evaluating filters itself.  Built per client (rare)."""
    data = payload(change, variant)
    return _frame(
        change, transport, data[:-1] + b',"subs":' + orjson.dumps(tags) + b"}"
    )


def _build(change: Change, variant: Variant, transport: str) -> bytes:
    return _frame(change, transport, payload(change, variant))


def _frame(change: Change, transport: str, data: bytes) -> bytes:
    if transport == "sse":
        return (
            b"id: "
            + change.event_id.encode()
            + b"\nevent: change\ndata: "
            + data
            + b"\n\n"
        )
    return (
        b'{"type":"change","id":"'
        + change.event_id.encode()
        + b'","data":'
        + data
        + b"}"
    )


def control_event(
    transport: str, event: str, data: dict[str, Any], event_id: str | None = None
) -> bytes:
    """A ``ready``/``reset``/``error`` event for one client."""
    if transport == "sse":
        head = f"id: {event_id}\n" if event_id is not None else ""
        return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"
    return orjson.dumps({"type": event, **data})
