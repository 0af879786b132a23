"""A consumer group's definition and its rows in ``pgpulse.consumer_groups``.

Why in the database: a worker that restarts, and every other worker of the
group, must agree on what the group reads (tables, filter, partitions) and
where it is.  A group is created by its first worker; a later worker asking
for something else is refused with the difference, never silently given a
different stream.
"""

from __future__ import annotations

import datetime as dt
import re
import zlib
from dataclasses import dataclass
from typing import Any

from pgpulse.exceptions import ConfigurationError
from pgpulse.log.change import Change
from pgpulse.log.cursor import Cursor, Snapshot

__all__ = ["GroupSpec", "ensure_group", "hold_xid", "partition_of"]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$")

DEFAULT_PARTITIONS = 16
DEFAULT_MAX_LAG = dt.timedelta(days=7)


@dataclass(frozen=True)
class GroupSpec:
    """What a group reads."""

    name: str
    tables: tuple[str, ...]
    """Schema-qualified names, as in the log."""
    filter: str = ""
    """The one filter grammar (``status=eq.paid``), applied to every table."""
    partitions: int = DEFAULT_PARTITIONS
    max_lag: dt.timedelta | None = DEFAULT_MAX_LAG
    """Past this lag (age of the oldest unacknowledged change) pruning resets
    the group instead of keeping the log for it; None: keep for ever."""

    def check(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigurationError(
                f"consumer group name {self.name!r} is not valid: use letters, "
                "digits and _ . : - (at most 100 characters)"
            )
        if not self.tables:
            raise ConfigurationError(
                f"consumer group {self.name!r} needs at least one table"
            )
        if not 1 <= self.partitions <= 1024:
            raise ConfigurationError(
                f"consumer group {self.name!r}: partitions must be 1 to 1024, "
                f"got {self.partitions}"
            )
        if self.max_lag is not None and self.max_lag <= dt.timedelta(0):
            raise ConfigurationError(
                f"consumer group {self.name!r}: max_lag must be positive"
            )


def partition_of(change: Change, partitions: int) -> int:
    """The partition of *change*'s row: the same for every change of a row
    (its table and key), in every process."""
    return zlib.crc32(f"{change.table}\x1f{change.pk}".encode()) % partitions


def hold_xid(cursor: Cursor) -> str:
    """Changes of transactions from this xid on may be unseen at *cursor*."""
    return str(cursor.prev.xmin)


async def ensure_group(conn: Any, spec: GroupSpec, start: str = "now") -> None:
    """Create the group (positions at *start*: ``now`` or ``beginning``) or
    check that the existing one reads the same; raises ConfigurationError."""
    spec.check()
    if start not in ("now", "beginning"):
        raise ConfigurationError(f"start must be 'now' or 'beginning', got {start!r}")
    async with conn.transaction():
        # Workers of a new group often start together: one creates it, the
        # others wait here and then find it (FOR UPDATE locks no row that
        # does not exist yet, so without this both would insert it).
        await conn.execute(
            "select pg_advisory_xact_lock(hashtext('pgpulse.consumer_group'), "
            "hashtext($1))",
            spec.name,
        )
        row = await conn.fetchrow(
            "select tables, filter, partitions from pgpulse.consumer_groups "
            "where name = $1 for update",
            spec.name,
        )
        if row is not None:
            theirs = (sorted(row["tables"]), row["filter"], row["partitions"])
            ours = (sorted(spec.tables), spec.filter, spec.partitions)
            if theirs != ours:
                raise ConfigurationError(
                    f"consumer group {spec.name!r} exists and reads tables "
                    f"{', '.join(theirs[0])} with filter {theirs[1]!r} in "
                    f"{theirs[2]} partitions, not tables {', '.join(ours[0])} "
                    f"with filter {ours[1]!r} in {ours[2]} partitions; use "
                    "another group name, or drop it first "
                    f"(pgpulse consumers drop {spec.name})"
                )
            if spec.max_lag is not None:
                await conn.execute(
                    "update pgpulse.consumer_groups set max_lag = $2 where name = $1",
                    spec.name,
                    spec.max_lag,
                )
            return
        if start == "now":
            snap = Snapshot.parse(
                await conn.fetchval("select pg_current_snapshot()::text")
            )
        else:
            # Nothing seen: the whole log (what pruning has kept of it).
            snap = Snapshot(1, 1, frozenset())
        cursor = Cursor.point(snap)
        await conn.execute(
            "insert into pgpulse.consumer_groups (name, tables, filter, partitions, "
            "max_lag) values ($1, $2, $3, $4, $5)",
            spec.name,
            list(spec.tables),
            spec.filter,
            spec.partitions,
            spec.max_lag,
        )
        await conn.execute(
            "insert into pgpulse.consumer_partitions "
            "(group_name, partition, position, hold_xid) "
            "select $1, p, $2, $3::text::xid8 from generate_series(0, $4 - 1) p",
            spec.name,
            cursor.encode(),
            hold_xid(cursor),
            spec.partitions,
        )
