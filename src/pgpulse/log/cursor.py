"""Positions in the change log that stay correct under concurrent writers.

Why not the log's bigserial id?  Ids are taken before commit: id 11 can become
visible before id 10, so "everything up to id 10" has holes.  A position is
instead expressed with PostgreSQL snapshots (``pg_current_snapshot()``):

* a **point** cursor ``S`` means: the reader has seen every change visible in
  snapshot ``S``;
* an **event** cursor ``P~S~n`` names one event of the batch read between
  snapshots ``P`` and ``S`` (the changes visible in ``S`` but not in ``P``,
  delivered in id order): the reader has seen everything visible in ``P`` and
  the changes of that batch with id <= ``n``.

Both are global (they do not depend on which gateway process produced them), so
a client can resume on any process.  Text forms: ``xmin:xmax:xip1,xip2`` for a
snapshot (PostgreSQL's own), joined by ``~``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgpulse.exceptions import CursorError

__all__ = ["Cursor", "Snapshot"]

_SNAPSHOT = re.compile(r"^(\d{1,20}):(\d{1,20}):((?:\d{1,20})(?:,\d{1,20})*)?$")


@dataclass(frozen=True)
class Snapshot:
    """A PostgreSQL ``pg_snapshot``: which transactions were committed at a time."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        match = _SNAPSHOT.match(text)
        if not match:
            raise CursorError(f"{text!r} is not a snapshot (xmin:xmax:xip,...)")
        xmin, xmax = int(match[1]), int(match[2])
        xip = (
            frozenset(int(x) for x in match[3].split(",")) if match[3] else frozenset()
        )
        if xmin > xmax or any(not xmin <= x < xmax for x in xip):
            raise CursorError(f"{text!r} is not a consistent snapshot")
        return cls(xmin, xmax, xip)

    def __str__(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(map(str, sorted(self.xip)))}"

    def visible(self, xid: int) -> bool:
        """Whether a *committed* transaction ``xid`` is visible in this snapshot."""
        return xid < self.xmin or (xid < self.xmax and xid not in self.xip)

    def covers(self, other: Snapshot) -> bool:
        """Cheap sufficient test that everything visible in *other* is visible here."""
        return self.xmin >= other.xmax

    def unseen_params(self) -> tuple[str, list[str]]:
        """SQL parameters for "not visible in this snapshot": ``xid >= $1 or xid =
        any($2)`` (index friendly, unlike ``pg_visible_in_snapshot``)."""
        return str(self.xmax), [str(x) for x in sorted(self.xip)]


@dataclass(frozen=True)
class Cursor:
    """A resumable position; see the module docstring."""

    prev: Snapshot
    snap: Snapshot
    after_id: int | None = None
    """``None`` for a point cursor (then ``prev == snap``)."""

    @classmethod
    def point(cls, snap: Snapshot) -> Cursor:
        return cls(snap, snap, None)

    @property
    def is_point(self) -> bool:
        return self.after_id is None

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse a cursor from an event id; raises :class:`CursorError`."""
        if not isinstance(text, str) or len(text) > 20_000:
            raise CursorError("event id is not a pgpulse cursor")
        parts = text.strip().split("~")
        try:
            if len(parts) == 1:
                return cls.point(Snapshot.parse(parts[0]))
            if len(parts) == 3 and parts[2].isdigit():
                prev, snap = Snapshot.parse(parts[0]), Snapshot.parse(parts[1])
                if prev.xmax > snap.xmax or prev.xmin > snap.xmin:
                    raise CursorError("event id has snapshots out of order")
                return cls(prev, snap, int(parts[2]))
        except CursorError as exc:
            raise CursorError(
                f"event id {text[:80]!r} is not a pgpulse cursor: {exc}"
            ) from None
        raise CursorError(
            f"event id {text[:80]!r} is not a pgpulse cursor "
            "(expected 'xmin:xmax:xip' or 'prev~snap~id')"
        )

    def encode(self) -> str:
        if self.after_id is None:
            return str(self.snap)
        return f"{self.prev}~{self.snap}~{self.after_id}"

    def __str__(self) -> str:
        return self.encode()

    def seen(self, xid: int, change_id: int) -> bool:
        """Whether the change (xid, id) is at or before this position."""
        if self.prev.visible(xid):
            return True
        return (
            self.after_id is not None
            and self.snap.visible(xid)
            and change_id <= self.after_id
        )

    @staticmethod
    def batch_prefix(prev: Snapshot, snap: Snapshot) -> str:
        """Event ids of a batch are this prefix plus the change id."""
        return f"{prev}~{snap}~"
