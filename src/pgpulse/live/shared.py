"""One live query's server-side state, shared by every client who asks it.

Why re-read instead of patching rows in Python: the rows of a query with a
filter, an order, a limit and embedded tables are what PostgreSQL says they
are (collations, NULL order, a row that leaves a full window bringing the next
one in, a shipment whose port changes inside every document that embeds it).
So after a batch of changes that can affect the query, the query runs again,
ONCE for all its clients, in one statement (embeds are joins, never N+1), and
the result is diffed against the rows the clients hold: the patches are exact
by construction, and the cost of a change is per distinct query it touches.

Stitching: the state is registered (and starts observing changes) before its
first read, so a change committed after that read's snapshot is always seen
by a later refresh; one committed before is in the read.  Nothing is missed,
and a change seen twice costs a refresh that finds no difference.

Patches (SSE events; the JSON of ``row``/``key`` as the REST endpoint gives):

* ``delete {"key"}``: the row left the result;
* ``insert {"row", "before"}`` / ``update {"row", "old_key", "before"}``:
  remove the row with that key if present, then insert it before the row
  keyed ``before`` (``null``: at the end);
* ``sync {"version"}`` (with the event id): the client's rows now equal the
  query's result at one database snapshot; render here.

Deletes come first, then inserts and updates in descending result order,
each placed before its successor: applied in order (and again, after a
reconnect in the middle: every step is idempotent) they give the result, in
order.  Rows whose content did not change and whose order relative to each
other holds (the longest such run) are not sent at all.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from pgpulse.exceptions import ValidationError
from pgpulse.live.wire import Op, PatchSet, encode_snapshot
from pgpulse.routing.outbox import Outbox

__all__ = ["Fetch", "SharedQuery"]

log = logging.getLogger("pgpulse.live")

Fetch = Callable[[], Awaitable[list[dict[str, Any]]]]
Describe = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]

#: Refreshes kept per query for clients resuming with Last-Event-ID.
HISTORY = 256


class SharedQuery:
    """The rows of one live query, refreshed after changes, with clients."""

    def __init__(
        self,
        query_id: str,
        label: str,
        key_columns: Sequence[str],
        tables: frozenset[str],
        fetch: Fetch,
        describe: Describe,
    ) -> None:
        self.id = query_id
        self.label = label
        """What to name in logs (table and query)."""
        self.key_columns = tuple(key_columns)
        self.tables = tables
        """Every table the query reads (schema-qualified): a change to any
        of them may change the result."""
        self._fetch = fetch
        self._describe = describe
        self.keys: list[str] = []
        """Row keys (JSON text), in result order."""
        self.rows: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.epoch = secrets.token_hex(4)
        self.ready = asyncio.Event()
        self.failed: str | None = None
        self.failed_status = 503
        """The HTTP status of the failure for a client joining it (400 when
        the query itself is at fault)."""
        self.history: deque[PatchSet] = deque(maxlen=HISTORY)
        self.outboxes: dict[Outbox, str] = {}
        """Clients, with their transport (``sse`` or ``ws``)."""
        self.refreshes = 0
        self.idle_since: float | None = None
        self.stale = False
        """Changes arrived while no client listened (read again on a join)."""
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._snapshots: dict[str, tuple[int, bytes]] = {}
        self._shape: tuple[str, ...] | None = None

    # -- refreshing ----------------------------------------------------------------

    def mark_dirty(self) -> None:
        """A change may have changed the result: read it again (once, however
        many changes arrive meanwhile)."""
        self._dirty = True
        if self.failed is None and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(
                self._run(), name=f"pgpulse-live-{self.id}"
            )

    async def _run(self) -> None:
        while self._dirty and self.failed is None:
            self._dirty = False
            try:
                rows = await self._fetch()
                self.refreshes += 1
                self._apply(rows)
            except asyncio.CancelledError:
                raise
            except ValidationError as exc:  # the query itself: the client's 400
                self.fail(str(exc), status=400)
                return
            except Exception as exc:  # the clients get the reason
                self.fail(f"live query on {self.label} failed: {exc}")
                return

    async def settled(self) -> None:
        """Wait until no read is due or running."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def fail(self, reason: str, status: int = 503) -> None:
        log.warning("%s; ending its %d streams", reason, len(self.outboxes))
        self.failed = reason
        self.failed_status = status
        self.ready.set()
        for outbox, transport in list(self.outboxes.items()):
            if transport == "ws":
                # One query of a connection that carries others: say so on
                # it, and keep the connection.
                frame = {"type": "error", "query": self.id, "reason": reason}
                outbox.put(orjson.dumps(frame))
            else:
                outbox.close(reason + "; reconnect")
        self.outboxes.clear()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _key(self, row: dict[str, Any]) -> str:
        try:
            values = [row[k] for k in self.key_columns]
        except KeyError:
            raise LookupError(
                f"a row of {self.label} lacks its key {', '.join(self.key_columns)}"
            ) from None
        return orjson.dumps(values).decode()

    def _key_object(self, key: str) -> dict[str, Any]:
        return dict(zip(self.key_columns, orjson.loads(key), strict=True))

    def _apply(self, rows: list[dict[str, Any]]) -> None:
        keys = [self._key(r) for r in rows]
        new = dict(zip(keys, rows, strict=True))
        if len(new) != len(rows):
            self.fail(f"live query on {self.label} returned one key twice")
            return
        shape = tuple(rows[0]) if rows else self._shape
        reshaped = (
            self._shape is not None and shape is not None and shape != self._shape
        )
        old_keys, old_rows = self.keys, self.rows
        self.keys, self.rows, self._shape = keys, new, shape
        if self.version == 0 or reshaped:
            # First read, or the table's columns changed (a migration): a
            # whole new snapshot, never rows of another shape as patches.
            self.version += 1
            if reshaped:
                self.history.clear()
                for outbox, transport in list(self.outboxes.items()):
                    outbox.put(self.snapshot(transport))
            self.ready.set()
            return
        ops = self._patches(old_keys, old_rows, keys, new)
        if not ops:
            return  # nothing changed: no version, nothing sent
        self.version += 1
        patch = PatchSet(self.id, self.version, self.event_id, ops)
        self.history.append(patch)
        for outbox, transport in list(self.outboxes.items()):
            # Written at once where the socket takes it (the SSE fast path),
            # the same bytes object for every client of a transport.
            outbox.put_deferred(patch.encoded(transport))
            outbox.flush()

    def _patches(
        self,
        old_keys: list[str],
        old_rows: dict[str, dict[str, Any]],
        keys: list[str],
        rows: dict[str, dict[str, Any]],
    ) -> list[Op]:
        ops: list[Op] = []
        for key in old_keys:
            if key not in rows:
                ops.append(("delete", {"key": self._key_object(key)}))
        stable = _stable(old_keys, old_rows, keys, rows)
        for i in range(len(keys) - 1, -1, -1):
            key = keys[i]
            if key in stable:
                continue
            before = self._key_object(keys[i + 1]) if i + 1 < len(keys) else None
            if key in old_rows:
                payload = {
                    "row": rows[key],
                    "old_key": self._key_object(key),
                    "before": before,
                }
                ops.append(("update", payload))
            else:
                ops.append(("insert", {"row": rows[key], "before": before}))
        return ops

    # -- what clients get ------------------------------------------------------------

    @property
    def event_id(self) -> str:
        """``query.epoch.version``: the epoch tells this state from another
        of the same query (another process, or after a restart), whose
        versions count from 1 again."""
        return f"{self.id}.{self.epoch}.{self.version}"

    def resumes(self, event_id: str, transport: str = "sse") -> list[bytes] | None:
        """What a client that last saw *event_id* missed, then a bare sync
        (it is current even when it missed nothing), or None when this state
        cannot tell (then it needs a snapshot)."""
        query_id, _, rest = event_id.partition(".")
        epoch, _, version = rest.partition(".")
        if query_id != self.id or epoch != self.epoch or not version.isdigit():
            return None
        missed = self.since(int(version))
        if missed is None:
            return None
        current = PatchSet(self.id, self.version, self.event_id, [])
        return [p.encoded(transport) for p in missed] + [current.encoded(transport)]

    def snapshot(self, transport: str = "sse") -> bytes:
        """The snapshot of the current rows (built once per version and
        transport)."""
        cached = self._snapshots.get(transport)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        rows = [self.rows[k] for k in self.keys]
        data = {
            "query": self.id,
            "version": self.version,
            "columns": self._describe(rows),
            "key": list(self.key_columns),
            "rows": rows,
        }
        event = encode_snapshot(transport, self.id, self.event_id, data)
        self._snapshots[transport] = (self.version, event)
        return event

    def since(self, version: int) -> list[PatchSet] | None:
        """The patch sets after *version*, or None when they are not all kept."""
        if version == self.version:
            return []
        if version > self.version or not self.history:
            return None
        if version < self.history[0].version - 1:
            return None
        return [p for p in self.history if p.version > version]


def _stable(
    old_keys: list[str],
    old_rows: dict[str, dict[str, Any]],
    keys: list[str],
    rows: dict[str, dict[str, Any]],
) -> set[str]:
    """Rows that need no patch: unchanged content, and among those the
    longest run whose order relative to each other did not change (a row can
    move without changing what is selected of it, e.g. ordered by a column
    not in select)."""
    position = {k: i for i, k in enumerate(old_keys)}
    same = [k for k in keys if k in old_rows and old_rows[k] == rows[k]]
    # Longest increasing subsequence of old positions, in new order.
    tails: list[int] = []
    tail_keys: list[str] = []
    links: dict[str, str | None] = {}
    for key in same:
        pos = position[key]
        i = bisect.bisect_left(tails, pos)
        links[key] = tail_keys[i - 1] if i > 0 else None
        if i == len(tails):
            tails.append(pos)
            tail_keys.append(key)
        else:
            tails[i] = pos
            tail_keys[i] = key
    out: set[str] = set()
    node = tail_keys[-1] if tail_keys else None
    while node is not None:
        out.add(node)
        node = links[node]
    return out
