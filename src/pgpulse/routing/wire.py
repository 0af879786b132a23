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

__all__ = [
    "Variant",
    "control_event",
    "encoded",
    "encoded_tagged",
    "payload",
    "project",
]


class Variant(enum.IntEnum):
    """How a change is shown to a subscriber, given its filters."""

    FULL = 0
    """The change as it happened."""
    MOVED_IN = 1
    """An UPDATE moved the row into the filter: shown as an INSERT of the new row."""
    MOVED_OUT = 2
    """An UPDATE moved the row out of the filter: shown as a DELETE of the old row."""


def project(text: str, columns: frozenset[str]) -> str:
    """The JSON object *text* with only the members named in *columns*.

    Done on the text, so every value keeps PostgreSQL's exact spelling
    (``9.990`` stays ``9.990``; a parse and dump would not).
    """
    out: list[str] = []
    i, n = 1, len(text)
    while i < n:
        while i < n and text[i] in " ,\n\t":
            i += 1
        if i >= n or text[i] == "}":
            break
        key_end = _string_end(text, i)
        key = orjson.loads(text[i:key_end])
        j = key_end
        while text[j] in " :":
            j += 1
        end = _value_end(text, j)
        if key in columns:
            out.append(text[i:end])
        i = end
    return "{" + ", ".join(out) + "}"


def _string_end(text: str, i: int) -> int:
    """Index after the JSON string starting at *i*."""
    i += 1
    while text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _value_end(text: str, i: int) -> int:
    """Index after the JSON value starting at *i*."""
    if text[i] == '"':
        return _string_end(text, i)
    if text[i] in "[{":
        depth = 0
        while True:
            ch = text[i]
            if ch == '"':
                i = _string_end(text, i)
                continue
            if ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
    while i < len(text) and text[i] not in ",}":
        i += 1
    return i


def payload(
    change: Change,
    variant: Variant = Variant.FULL,
    columns: frozenset[str] | None = None,
) -> bytes:
    """The JSON payload of the event for *variant* (rows cut to *columns*)."""
    op, row, old, moved = change.op, change.row, change.old, ""
    if columns is not None:
        row = None if row is None else project(row, columns)
        old = None if old is None else project(old, columns)
    if variant is Variant.MOVED_IN:
        op, old, moved = "INSERT", None, ',"moved":true'
    elif variant is Variant.MOVED_OUT:
        op, row, moved = "DELETE", None, ',"moved":true'
    return (
        f'{{"table":{orjson.dumps(change.name).decode()},"op":"{op}",'
        f'"pk":{change.pk},"row":{row or "null"},"old":{old or "null"},'
        f'"ts":{change.ts}{moved}}}'
    ).encode()


def encoded(
    change: Change,
    variant: Variant,
    transport: str,
    columns: frozenset[str] | None = None,
) -> bytes:
    """Wire bytes for *transport* (``sse`` or ``ws``), built once and shared
    (per set of *columns* a policy lets a role read)."""
    # The common case (full change over SSE) skips the dict: this runs once
    # per delivery, i.e. changes x subscribers times.
    if columns is not None:
        key: Any = (variant, transport, columns)
        found = change._encoded.get(key)
        if found is None:
            data = payload(change, variant, columns)
            found = change._encoded[key] = _frame(change, transport, data)
        return found
    if variant is Variant.FULL and transport == "sse":
        full = change._sse_full
        if full is None:
            full = change._sse_full = _build(change, variant, transport)
        return full
    plain = (variant, transport)
    cached = change._encoded.get(plain)
    if cached is None:
        cached = change._encoded[plain] = _build(change, variant, transport)
    return cached


def encoded_tagged(
    change: Change,
    variant: Variant,
    transport: str,
    tags: dict[str, str],
    columns: frozenset[str] | None = None,
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
