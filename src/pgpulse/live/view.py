"""A client's copy of a live query's rows, kept by applying its events.

Why in the library: the Python client (:meth:`pgpulse.clients.Client.live`)
and the tests apply the same events the browser client does, by the rules
:mod:`pgpulse.live.shared` states (every step idempotent, so a patch set
replayed after a reconnect changes nothing twice).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["LiveRows"]


class LiveRows:
    """The rows of one live query, in order, as the server last stated."""

    def __init__(self) -> None:
        self.query: str | None = None
        self.key_columns: list[str] = []
        self.columns: list[dict[str, Any]] = []
        self.version = 0
        self._keys: list[str] = []
        self._rows: dict[str, dict[str, Any]] = {}

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [self._rows[k] for k in self._keys]

    def _key(self, values: dict[str, Any]) -> str:
        return orjson.dumps([values[k] for k in self.key_columns]).decode()

    def apply(self, event: str, data: dict[str, Any]) -> bool:
        """Apply one event; True when the rows are a whole, consistent result
        again (after a ``snapshot`` or a ``sync``)."""
        if event == "snapshot":
            self.query = data["query"]
            self.key_columns = list(data["key"])
            self.columns = list(data["columns"])
            self.version = int(data["version"])
            rows = data["rows"]
            self._keys = [self._key(r) for r in rows]
            self._rows = dict(zip(self._keys, rows, strict=True))
            return True
        if event == "delete":
            self._remove(self._key(data["key"]))
        elif event in ("insert", "update"):
            row = data["row"]
            key = self._key(row)
            if event == "update":
                self._remove(self._key(data["old_key"]))
            self._remove(key)
            before = data.get("before")
            at = len(self._keys)
            if before is not None:
                at = self._keys.index(self._key(before))
            self._keys.insert(at, key)
            self._rows[key] = row
        elif event == "sync":
            self.version = int(data["version"])
            return True
        return False

    def _remove(self, key: str) -> None:
        if key in self._rows:
            del self._rows[key]
            self._keys.remove(key)
