"""The in-process event bus: routes each change to the matching subscribers.

Why this shape: routing cost must grow with the number of *matching*
subscribers, not all of them.  Per table, unfiltered subscriptions are a plain
set; filtered ones with an ``eq`` condition are indexed by (column, value), so a
change to shipment 42 looks at the subscribers of shipment 42 only; the rest (no
usable equality) are scanned.  UPDATE and DELETE are matched on the old and the
new row, so a row leaving a filter is announced (as a DELETE of the old row)
without revealing the new one.  Each change is encoded once per variant and
transport and the same bytes go to every matching subscriber (:mod:`events`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from typing import Any

from pgpulse.log.change import Change
from pgpulse.log.changelog import Batch
from pgpulse.log.cursor import Cursor, Snapshot
from pgpulse.routing.outbox import Outbox
from pgpulse.routing.subscriptions import SubscriptionSpec
from pgpulse.routing.wire import Variant, encoded

__all__ = ["Bus", "Subscriber", "Subscription"]

log = logging.getLogger("pgpulse.routing.bus")

_ids = itertools.count(1)


class Subscriber:
    """One client connection: its transport, outbox and subscriptions."""

    __slots__ = (
        "id",
        "label",
        "outbox",
        "pending",
        "pending_size",
        "skip",
        "subscriptions",
        "transport",
    )

    def __init__(self, transport: str, outbox: Outbox, label: str = "") -> None:
        self.id = next(_ids)
        self.transport = transport
        self.outbox = outbox
        self.label = label or f"client#{self.id}"
        self.subscriptions: list[Subscription] = []
        self.pending_size = 0
        self.pending: list[tuple[int, bytes]] | None = None
        """Live events held back while the client catches up from the log."""
        self.skip: Snapshot | None = None
        """Drop live events already delivered by the catch-up (visible here)."""

    def deliver(self, change: Change, variant: Variant) -> bool:
        """Queue the change; True if the outbox now needs a flush."""
        if self.skip is not None and self.skip.visible(change.xid):
            return False
        data = encoded(change, variant, self.transport)
        if self.pending is not None:
            # Held back during catch-up; bounded like the outbox itself.
            self.pending_size += len(data)
            if self.pending_size > self.outbox.limit:
                self.pending = []
                self.outbox.close(
                    f"client fell more than {self.outbox.limit} bytes behind while "
                    "catching up; reconnect with Last-Event-ID to continue"
                )
                return False
            self.pending.append((change.xid, data))
            return False
        return self.outbox.put_deferred(data)

    def match(self, change: Change) -> Variant | None:
        """How *change* is shown to this subscriber, or None (used by catch-up)."""
        in_new = in_old = False
        for sub in self.subscriptions:
            if sub.spec.table != change.table:
                continue
            n, o = sub.matches(change)
            in_new |= n
            in_old |= o
        return _variant(change, in_new, in_old)

    def begin_catch_up(self) -> None:
        self.pending = []
        self.pending_size = 0

    def end_catch_up(self, reached: Snapshot) -> None:
        """Release held live events that the catch-up did not already deliver."""
        pending, self.pending = self.pending or [], None
        self.skip = reached
        for xid, data in pending:
            if not reached.visible(xid):
                self.outbox.put(data)

    def __repr__(self) -> str:
        return f"<Subscriber {self.label}>"


class Subscription:
    __slots__ = ("spec", "subscriber")

    def __init__(self, spec: SubscriptionSpec, subscriber: Subscriber) -> None:
        self.spec = spec
        self.subscriber = subscriber

    def matches(self, change: Change) -> tuple[bool, bool]:
        """Whether the new row and the old row pass this subscription's filters."""
        predicate = self.spec.predicate
        if predicate is None or change.op == "TRUNCATE":
            return True, True
        if self.spec.keys_only:
            ok = predicate(change.pk_dict())
            return ok, ok
        new, old = change.row_dict(), change.old_dict()
        return (
            new is not None and predicate(new),
            old is not None and predicate(old),
        )


def _variant(change: Change, in_new: bool, in_old: bool) -> Variant | None:
    if change.op == "UPDATE":
        if in_new and in_old:
            return Variant.FULL
        if in_new:
            return Variant.MOVED_IN
        if in_old:
            return Variant.MOVED_OUT
        return None
    if change.op == "INSERT":
        return Variant.FULL if in_new else None
    if change.op == "DELETE":
        return Variant.FULL if in_old else None
    return Variant.FULL if (in_new or in_old) else None


class _Routes:
    """The subscriptions of one table."""

    __slots__ = ("indexed", "scanned", "unfiltered")

    def __init__(self) -> None:
        self.unfiltered: dict[Subscriber, int] = {}
        self.indexed: dict[str, dict[Any, set[Subscription]]] = {}
        self.scanned: set[Subscription] = set()

    def empty(self) -> bool:
        return not (self.unfiltered or self.indexed or self.scanned)


class Bus:
    """Subscription index plus dispatch of listener batches."""

    def __init__(self) -> None:
        self._routes: dict[str, _Routes] = {}
        self._coerce: dict[tuple[str, str], Any] = {}
        self.position: Snapshot | None = None
        """Every change visible here has been dispatched."""
        self.in_batch = False
        """True between the chunks of a large batch (new clients must catch up)."""
        self.subscribers: set[Subscriber] = set()
        self._skipping: set[Subscriber] = set()
        self._batching = False
        self._dirty: list[Outbox] = []
        self.delivered = 0
        self.changes = 0

    # -- registration ---------------------------------------------------------

    def subscribe(self, subscriber: Subscriber, spec: SubscriptionSpec) -> Subscription:
        sub = Subscription(spec, subscriber)
        routes = self._routes.setdefault(spec.table, _Routes())
        if spec.predicate is None:
            routes.unfiltered[subscriber] = routes.unfiltered.get(subscriber, 0) + 1
        elif spec.index_column is not None:
            routes.indexed.setdefault(spec.index_column, {}).setdefault(
                spec.index_value, set()
            ).add(sub)
            self._coerce[(spec.table, spec.index_column)] = spec.index_coerce
        else:
            routes.scanned.add(sub)
        subscriber.subscriptions.append(sub)
        self.subscribers.add(subscriber)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        spec = sub.spec
        routes = self._routes.get(spec.table)
        if sub in sub.subscriber.subscriptions:
            sub.subscriber.subscriptions.remove(sub)
        if routes is None:
            return
        if spec.predicate is None:
            count = routes.unfiltered.get(sub.subscriber, 0) - 1
            if count > 0:
                routes.unfiltered[sub.subscriber] = count
            else:
                routes.unfiltered.pop(sub.subscriber, None)
        elif spec.index_column is not None:
            by_value = routes.indexed.get(spec.index_column, {})
            subs = by_value.get(spec.index_value)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del by_value[spec.index_value]
                if not by_value:
                    routes.indexed.pop(spec.index_column, None)
        else:
            routes.scanned.discard(sub)
        if routes.empty():
            del self._routes[spec.table]

    def remove(self, subscriber: Subscriber) -> None:
        for sub in list(subscriber.subscriptions):
            self.unsubscribe(sub)
        self.subscribers.discard(subscriber)
        self._skipping.discard(subscriber)

    def finish_catch_up(self, subscriber: Subscriber, reached: Snapshot) -> None:
        """The subscriber's catch-up read everything visible in *reached*."""
        subscriber.end_catch_up(reached)
        if self.position is not None and self.position.covers(reached):
            subscriber.skip = None
        else:
            self._skipping.add(subscriber)

    def cursor(self) -> Cursor | None:
        """The position a new subscriber starts from (None before the first read)."""
        return Cursor.point(self.position) if self.position is not None else None

    # -- dispatch -----------------------------------------------------------------

    def on_batch(self, batch: Batch, final: bool) -> None:
        """Listener callback: dispatch a batch (or a chunk of a large one)."""
        self.in_batch = not final
        self._batching = True
        try:
            changes = batch.changes
            i, n = 0, len(changes)
            while i < n:
                # A run of changes to one table reaches the same unfiltered
                # subscribers: one joined write each instead of one per change.
                table = changes[i].table
                j = i + 1
                while j < n and changes[j].table == table:
                    j += 1
                self._publish_run(changes[i:j])
                i = j
        finally:
            self._batching = False
            self._flush()
        if final:
            self.position = batch.snap
            # Clients whose catch-up reached a snapshot we have now passed no
            # longer need the per-event skip check.
            for subscriber in list(self._skipping):
                if subscriber.skip is None or batch.snap.covers(subscriber.skip):
                    subscriber.skip = None
                    self._skipping.discard(subscriber)

    def _flush(self) -> None:
        """One write per dirty subscriber for everything dispatched since."""
        dirty, self._dirty = self._dirty, []
        for outbox in dirty:
            if outbox.dirty:
                outbox.flush()

    def publish(self, change: Change) -> int:
        """Deliver one change; returns the number of subscribers reached."""
        return self._publish_run([change])

    def _publish_run(self, run: list[Change]) -> int:
        """Deliver changes to one table, in order; returns the deliveries."""
        self.changes += len(run)
        routes = self._routes.get(run[0].table)
        if routes is None:
            return 0
        unfiltered = routes.unfiltered
        dirty = self._dirty
        joined: bytes | None = None
        others: list[Subscriber] = []
        for subscriber in unfiltered:
            # Fast path for the common subscriber: SSE, live (not catching up,
            # nothing to skip); the same bytes object goes to every one of them.
            if (
                subscriber.transport == "sse"
                and subscriber.pending is None
                and subscriber.skip is None
            ):
                if joined is None:
                    joined = b"".join([encoded(c, Variant.FULL, "sse") for c in run])
                outbox = subscriber.outbox
                if outbox.put_deferred(joined):
                    dirty.append(outbox)
            else:
                others.append(subscriber)
        reached = len(unfiltered) * len(run)
        filtered = bool(routes.indexed or routes.scanned)
        for change in run:
            for subscriber in others:
                if subscriber.deliver(change, Variant.FULL):
                    dirty.append(subscriber.outbox)
            if filtered:
                reached += self._publish_filtered(change, routes)
        self.delivered += reached
        if not self._batching:
            self._flush()
        return reached

    def _publish_filtered(self, change: Change, routes: _Routes) -> int:
        """Deliver *change* to the filtered subscribers it matches."""
        unfiltered = routes.unfiltered
        dirty = self._dirty
        reached = 0
        matched: dict[Subscriber, tuple[bool, bool]] = {}
        for sub in self._candidates(change, routes):
            subscriber = sub.subscriber
            if subscriber in unfiltered:
                continue
            n, o = sub.matches(change)
            if n or o:
                pn, po = matched.get(subscriber, (False, False))
                matched[subscriber] = (pn or n, po or o)
        for subscriber, (n, o) in matched.items():
            variant = _variant(change, n, o)
            if variant is not None:
                if subscriber.deliver(change, variant):
                    dirty.append(subscriber.outbox)
                reached += 1
        return reached

    def _candidates(self, change: Change, routes: _Routes) -> Iterable[Subscription]:
        yield from routes.scanned
        if not routes.indexed:
            return
        if change.op == "TRUNCATE":
            for by_value in routes.indexed.values():
                for subs in by_value.values():
                    yield from subs
            return
        rows = (
            [change.pk_dict()]
            if change.row is None and change.old is None
            else [r for r in (change.row_dict(), change.old_dict()) if r is not None]
        )
        for column, by_value in routes.indexed.items():
            coerce = self._coerce[(change.table, column)]
            seen: set[Any] = set()
            for row in rows:
                raw = row.get(column)
                if raw is None:
                    continue
                try:
                    value = coerce(raw)
                except (ValueError, TypeError, ArithmeticError):
                    continue
                if value in seen:
                    continue
                seen.add(value)
                yield from by_value.get(value, ())
