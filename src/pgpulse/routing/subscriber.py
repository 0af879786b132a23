"""One client connection on the bus: its subscriptions, outbox and catch-up state.

Why its own module: how a change is shown to one client (as it happened, or as
the INSERT / DELETE of a row moving into or out of its filter, never the side
it may not see) is decided here, and so is what a value the filter cannot
evaluate costs: that row, for that subscriber, logged and counted, never the
batch (:class:`FilterErrors`).
"""

from __future__ import annotations

import itertools
import logging

from pgpulse.log.change import Change
from pgpulse.log.cursor import Snapshot
from pgpulse.routing.outbox import Outbox
from pgpulse.routing.subscriptions import SubscriptionSpec
from pgpulse.routing.values import RowKeys
from pgpulse.routing.wire import Variant, encoded, encoded_tagged

__all__ = [
    "FilterErrors",
    "PolicyFailure",
    "Subscriber",
    "Subscription",
    "row_keys",
    "variant_of",
]

log = logging.getLogger("pgpulse.bus")

_ids = itertools.count(1)


def row_keys(change: Change) -> tuple[RowKeys | None, RowKeys | None]:
    """The new and old rows of *change* as the filters compare them (parsed
    exactly once per change; a keys-only table's key stands for both)."""
    cached = change._keys
    if cached is None:
        if change.row is None and change.old is None:
            keys = RowKeys(change.pk)
            cached = (keys, keys)
        else:
            cached = (
                None if change.row is None else RowKeys(change.row),
                None if change.old is None else RowKeys(change.old),
            )
        change._keys = cached
    return cached  # type: ignore[no-any-return]


class PolicyFailure(Exception):
    """The caller's row-level security cannot be evaluated at all (its
    policies raise for its claims): the stream ends with the reason."""


class FilterErrors:
    """Counts (and logs, without flooding) rows a filter could not evaluate."""

    def __init__(self) -> None:
        self.total = 0
        self._logged: dict[int, int] = {}

    def record(
        self, subscriber: Subscriber, change: Change, exc: BaseException
    ) -> None:
        if isinstance(exc, PolicyFailure):
            subscriber.outbox.close(str(exc))
            return
        self.total += 1
        seen = self._logged.get(subscriber.id, 0) + 1
        self._logged[subscriber.id] = seen
        if seen <= 3 or seen % 1000 == 0:
            log.warning(
                "skipped a change to %s (key %s) for %s: its filter cannot evaluate "
                "the row (%s: %s)%s",
                change.table,
                change.pk,
                subscriber.label,
                type(exc).__name__,
                exc,
                f"; {seen} rows skipped for this client so far" if seen > 1 else "",
            )

    def forget(self, subscriber: Subscriber) -> None:
        self._logged.pop(subscriber.id, None)


def variant_of(change: Change, in_new: bool, in_old: bool) -> Variant | None:
    """How *change* is shown given which of its rows pass the filter."""
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


_SHOWN_AS = {Variant.MOVED_IN: "INSERT", Variant.MOVED_OUT: "DELETE"}


class Subscription:
    __slots__ = ("ref", "spec", "subscriber")

    def __init__(
        self, spec: SubscriptionSpec, subscriber: Subscriber, ref: str = ""
    ) -> None:
        self.spec = spec
        self.subscriber = subscriber
        self.ref = ref
        """The client's name for it (its place in ``sub=``, a WebSocket ref)."""

    def matches(self, change: Change) -> tuple[bool, bool]:
        """Whether the new row and the old row pass this subscription's filters.

        Raises when a row cannot be evaluated (a poison value, or a row the
        database could not evaluate): the caller skips the row for this
        subscriber and counts it.
        """
        spec = self.spec
        if change.op == "TRUNCATE" or not spec.filtered:
            return True, True
        db_filter = spec.db_filter
        if db_filter is not None:
            verdicts = change.verdicts
            pair = None if verdicts is None else verdicts.get(db_filter.key)
            if pair is None:
                viewed = change.viewed
                if viewed is not None and db_filter.key in viewed:
                    return False, False  # its viewer may see neither row
                raise LookupError("PostgreSQL could not evaluate the filter on it")
            if isinstance(pair, str):
                raise PolicyFailure(pair)
            return pair[0], pair[1]
        predicate = spec.predicate
        assert predicate is not None
        new, old = row_keys(change)
        return (
            new is not None and predicate(new) is True,
            old is not None and predicate(old) is True,
        )


class Subscriber:
    """One client connection: its transport, outbox and subscriptions."""

    __slots__ = (
        "columns",
        "expires_at",
        "id",
        "label",
        "outbox",
        "pending",
        "pending_size",
        "per_table",
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
        self.per_table: dict[str, int] = {}
        """Subscriptions per table: with two or more on one table, each event
        says which of them see it, and how (:meth:`tags`)."""
        self.columns: dict[str, frozenset[str]] = {}
        """Per table, the only columns its events may carry (a policy's)."""
        self.expires_at: float | None = None
        """When the client's token expires (the stream ends then)."""
        self.pending_size = 0
        self.pending: list[tuple[int, bytes]] | None = None
        """Live events held back while the client catches up from the log."""
        self.skip: Snapshot | None = None
        """Drop live events already delivered by the catch-up (visible here)."""

    def several(self, table: str) -> bool:
        return self.per_table.get(table, 0) > 1

    def deliver(
        self, change: Change, variant: Variant, tags: dict[str, str] | None = None
    ) -> bool:
        """Queue the change; True if the outbox now needs a flush."""
        if self.skip is not None and self.skip.visible(change.xid):
            return False
        data = self.encode(change, variant, tags)
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

    def encode(
        self, change: Change, variant: Variant, tags: dict[str, str] | None = None
    ) -> bytes:
        """The event as this client may see it (its policy's columns only)."""
        columns = self.columns.get(change.table) if self.columns else None
        if tags is None:
            return encoded(change, variant, self.transport, columns)
        return encoded_tagged(change, variant, self.transport, tags, columns)

    def evaluate(
        self, change: Change, errors: FilterErrors
    ) -> tuple[Variant | None, dict[str, str] | None]:
        """How *change* is shown to this subscriber, and with several
        subscriptions on its table, how each of them sees it."""
        in_new = in_old = False
        tags: dict[str, str] | None = {} if self.several(change.table) else None
        for sub in self.subscriptions:
            if sub.spec.table != change.table:
                continue
            try:
                n, o = sub.matches(change)
            except Exception as exc:  # a poison row costs that row, here only
                errors.record(self, change, exc)
                continue
            in_new |= n
            in_old |= o
            if tags is not None:
                own = variant_of(change, n, o)
                if own is not None:
                    tags[sub.ref] = _SHOWN_AS.get(own, change.op)
        return variant_of(change, in_new, in_old), tags

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
