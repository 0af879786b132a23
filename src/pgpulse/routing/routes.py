"""The subscriptions of one table, indexed so a change looks at few of them.

Why its own module: routing cost must grow with the number of *matching*
subscribers, not all of them.  Unfiltered subscriptions are a plain set;
filtered ones with an ``eq`` condition are indexed by (column, value), so a
change to shipment 42 looks at the subscribers of shipment 42 only; those under
row-level security are indexed by their (role, claims) group, so a change
looks only at the groups PostgreSQL said see it
(:mod:`pgpulse.routing.row_security`); the rest (no usable equality) are
scanned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pgpulse.log.change import Change
from pgpulse.routing.subscriber import Subscriber, Subscription, row_keys

__all__ = ["TableRoutes"]

log = logging.getLogger("pgpulse.routing.bus")


class TableRoutes:
    """The subscriptions of one table."""

    __slots__ = ("index_keys", "indexed", "scanned", "unfiltered", "viewed")

    def __init__(self) -> None:
        self.unfiltered: dict[Subscriber, int] = {}
        self.indexed: dict[str, dict[Any, set[Subscription]]] = {}
        self.index_keys: dict[str, Any] = {}
        """Per indexed column, how its values compare (:mod:`values`)."""
        self.viewed: dict[str, set[Subscription]] = {}
        """Under row-level security, by filter key: a change reaches only the
        groups whose verdict says they see it (not a scan of everyone)."""
        self.scanned: set[Subscription] = set()

    def empty(self) -> bool:
        return not (self.unfiltered or self.indexed or self.viewed or self.scanned)

    @property
    def filtered(self) -> bool:
        return bool(self.indexed or self.viewed or self.scanned)

    def add(self, sub: Subscription) -> None:
        spec = sub.spec
        if not spec.filtered:
            self.unfiltered[sub.subscriber] = self.unfiltered.get(sub.subscriber, 0) + 1
        elif spec.index_column is not None:
            self.indexed.setdefault(spec.index_column, {}).setdefault(
                spec.index_value, set()
            ).add(sub)
            self.index_keys[spec.index_column] = spec.index_key
        elif spec.db_filter is not None and spec.db_filter.viewer is not None:
            self.viewed.setdefault(spec.db_filter.key, set()).add(sub)
        else:
            self.scanned.add(sub)

    def remove(self, sub: Subscription) -> None:
        spec = sub.spec
        if not spec.filtered:
            count = self.unfiltered.get(sub.subscriber, 0) - 1
            if count > 0:
                self.unfiltered[sub.subscriber] = count
            else:
                self.unfiltered.pop(sub.subscriber, None)
        elif spec.index_column is not None:
            by_value = self.indexed.get(spec.index_column, {})
            subs = by_value.get(spec.index_value)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del by_value[spec.index_value]
                if not by_value:
                    self.indexed.pop(spec.index_column, None)
        elif spec.db_filter is not None and spec.db_filter.viewer is not None:
            key = spec.db_filter.key
            viewers = self.viewed.get(key)
            if viewers is not None:
                viewers.discard(sub)
                if not viewers:
                    del self.viewed[key]
        else:
            self.scanned.discard(sub)

    def candidates(self, change: Change) -> Iterable[Subscription]:
        """The filtered subscriptions *change* may match (each may come more
        than once: the caller decides each subscriber once)."""
        yield from self.scanned
        if self.viewed:
            yield from self._viewers(change)
        if not self.indexed:
            return
        if change.op == "TRUNCATE":
            for by_value in self.indexed.values():
                for subs in by_value.values():
                    yield from subs
            return
        try:
            rows = [r for r in row_keys(change) if r is not None]
        except ValueError as exc:  # the row is not JSON we can read
            log.warning("cannot read a change to %s: %s", change.table, exc)
            rows = []
        for column, by_value in self.indexed.items():
            key_of = self.index_keys[column]
            seen: set[Any] = set()
            for row in rows:
                try:
                    value = row.key(column, key_of)
                except (ValueError, TypeError, ArithmeticError):
                    continue  # matches() reports it for each subscriber
                if value is None or value in seen:
                    continue
                seen.add(value)
                yield from by_value.get(value, ())

    def _viewers(self, change: Change) -> Iterable[Subscription]:
        """The row-level security groups that see *change* (or all of them for
        a TRUNCATE, or when a filter was not evaluated on it: their
        :meth:`Subscription.matches` then reports it)."""
        viewed = self.viewed
        evaluated = change.viewed
        if (
            change.op == "TRUNCATE"
            or evaluated is None
            or not viewed.keys() <= evaluated
        ):
            for every in viewed.values():
                yield from every
            return
        for key in change.verdicts or ():
            seeing = viewed.get(key)
            if seeing:
                yield from seeing
