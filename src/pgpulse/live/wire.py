"""A live query's events, as SSE bytes or WebSocket frames, built once each.

Why both from one list of operations: the state computes a patch set once;
each transport's encoding of it is built the first time a client of that
transport needs it and then shared by all of them (the same bytes object).
Over SSE a patch set is several events closed by a ``sync`` that carries the
event id; over WebSocket it is one ``patch`` frame (``ops``), atomic by
construction, naming the query by its id (a connection maps its own refs).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["Op", "PatchSet", "encode_snapshot", "sse_event"]

Op = tuple[str, dict[str, Any]]
"""``("delete", {"key"})``, ``("insert", {"row", "before"})``,
``("update", {"row", "old_key", "before"})``."""


def sse_event(kind: str, data: Any, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


class PatchSet:
    """One version's operations (none: a bare ``sync``), encoded on demand."""

    __slots__ = ("_encoded", "event_id", "ops", "query_id", "version")

    def __init__(
        self, query_id: str, version: int, event_id: str, ops: list[Op]
    ) -> None:
        self.query_id = query_id
        self.version = version
        self.event_id = event_id
        self.ops = ops
        self._encoded: dict[str, bytes] = {}

    def encoded(self, transport: str) -> bytes:
        data = self._encoded.get(transport)
        if data is None:
            data = self._encode(transport)
            self._encoded[transport] = data
        return data

    def _encode(self, transport: str) -> bytes:
        if transport == "ws":
            frame = {
                "type": "patch",
                "query": self.query_id,
                "id": self.event_id,
                "version": self.version,
                "ops": [{"op": kind, **payload} for kind, payload in self.ops],
            }
            return orjson.dumps(frame)
        parts = [sse_event(kind, payload) for kind, payload in self.ops]
        parts.append(sse_event("sync", {"version": self.version}, self.event_id))
        return b"".join(parts)


def encode_snapshot(
    transport: str, query_id: str, event_id: str, data: dict[str, Any]
) -> bytes:
    if transport == "ws":
        return orjson.dumps(
            {"type": "snapshot", "query": query_id, "id": event_id, "data": data}
        )
    return sse_event("snapshot", data, event_id)
