"""Reading a worker's partitions from the log, its filter decided by PostgreSQL.

Why lanes: partitions that share a position are read as one lane, so a worker
whose partitions moved together reads the log once; lanes read to the end in
one snapshot meet at the same position and merge.  The filter is evaluated
by PostgreSQL, one statement per table and read
(:mod:`pgpulse.routing.db_filters`), so it means exactly what it means in a
query; a change is the handler's when its row matches before or after it (a
row leaving the filter is news too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pgpulse.consumers.batch import Move
from pgpulse.consumers.groups import partition_of
from pgpulse.log.change import Change
from pgpulse.log.changelog import Lane, read_lanes
from pgpulse.log.cursor import Cursor
from pgpulse.routing import db_filters
from pgpulse.routing.db_filters import DatabaseFilter

__all__ = ["Read", "read_partitions"]

log = logging.getLogger("pgpulse.consumers")


@dataclass
class Read:
    """What one read found."""

    changes: list[Change]
    """The handler's changes, in log order per lane."""
    moves: list[Move]
    """How acknowledging them moves the partitions read."""
    more: bool
    """A lane stopped short of the snapshot's end: read again now."""


async def read_partitions(
    conn: Any,
    group: str,
    positions: Mapping[int, str],
    partitions: int,
    tables: list[str],
    filters: Mapping[str, DatabaseFilter],
    name_of: Callable[[str], str],
    limit: int,
    timeout: float | None,
) -> Read:
    """Read the changes after *positions* (partition → position), at most
    *limit* of the handler's."""
    by_position: dict[str, set[int]] = {}
    for partition, position in positions.items():
        by_position.setdefault(position, set()).add(partition)
    # The lane furthest behind first: lanes share the read's limit, and a lane
    # always read last would starve while writes keep the first ones full.
    order = sorted(by_position, key=lambda text: _age_key(Cursor.decode(text)))
    lanes: list[tuple[Lane, str, frozenset[int]]] = []
    for position in order:
        held = by_position[position]
        owned = frozenset(held)

        def keep(change: Change, owned: frozenset[int] = owned) -> bool:
            return partition_of(change, partitions) in owned

        lanes.append((Lane(Cursor.decode(position), keep), position, owned))
    await read_lanes(
        conn, [lane for lane, _, _ in lanes], name_of, tables, limit, timeout
    )
    read = [c for lane, _, _ in lanes for c in lane.changes]
    for table, dbf in filters.items():
        mine = [c for c in read if c.table == table]
        if mine:
            await db_filters.evaluate(conn, dbf.table, mine, [dbf])
    moves: list[Move] = []
    kept: list[Change] = []
    for lane, position, owned in lanes:
        assert lane.end is not None
        if lane.end.encode() == position:
            continue
        selected = [c for c in lane.changes if _selected(group, c, filters)]
        kept.extend(selected)
        counts = dict.fromkeys(owned, 0)
        for change in selected:
            counts[partition_of(change, partitions)] += 1
        ordered = tuple(sorted(owned))
        moves.append(
            Move(ordered, position, lane.end, tuple(counts[p] for p in ordered))
        )
    more = any(lane.end is not None and not lane.end.is_point for lane, _, _ in lanes)
    return Read(kept, moves, more)


def _age_key(cursor: Cursor) -> tuple[int, int, int]:
    """Older positions sort first: by the snapshot everything before is seen
    in, then how far into its batch."""
    return (cursor.prev.xmax, cursor.prev.xmin, cursor.after_id or 0)


def _selected(
    group: str, change: Change, filters: Mapping[str, DatabaseFilter]
) -> bool:
    dbf = filters.get(change.table)
    if dbf is None or change.op == "TRUNCATE":
        return True
    verdict = (change.verdicts or {}).get(dbf.key)
    if not isinstance(verdict, list):
        # PostgreSQL could not evaluate this row (its table changed since it
        # was logged): deliver it rather than lose it.
        log.warning(
            "consumer group %s: the filter could not be evaluated on change %s "
            "of %s; delivering it",
            group,
            change.event_id,
            change.table,
        )
        return True
    return verdict[0] or verdict[1]
