"""Setting up and tearing down the wal capture source of a database.

Why a separate step: the replication slot cannot be created inside a transaction
that wrote anything, and must exist before a table joins the publication (or its
first changes would precede the slot), while the publication must exist before
the slot (pgoutput looks the publication up as of each decoded change).  So
:func:`enable_wal` runs first, statement by statement, then ``pgpulse.watch``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgpulse.exceptions import ConfigurationError

__all__ = [
    "PUBLICATION",
    "SlotStatus",
    "disable_wal_if_unused",
    "enable_wal",
    "slot_name",
    "slot_status",
    "wal_tables",
]

log = logging.getLogger("pgpulse.capture")

#: The publication of every table watched with source ``wal``.
PUBLICATION = "pgpulse_capture"


async def slot_name(conn: Any) -> str:
    """This database's replication slot (slot names are cluster-wide)."""
    return str(await conn.fetchval("select pgpulse.slot_name()"))


async def wal_tables(conn: Any) -> int:
    """How many tables are watched with source ``wal``."""
    return int(
        await conn.fetchval("select count(*) from pgpulse.watched where source = 'wal'")
    )


@dataclass(frozen=True)
class SlotStatus:
    """What an operator needs to know about the wal source's slot."""

    name: str
    decoding_pid: int | None
    """The walsender streaming it to a gateway, or ``None`` (nobody decodes)."""
    held_back_bytes: int
    """WAL the slot keeps on disk beyond what it has confirmed."""
    decoded_lsn: str
    """End of the last transaction logged from it."""


async def slot_status(conn: Any) -> SlotStatus | None:
    """The slot of this database, or ``None`` when it has none."""
    row = await conn.fetchrow(
        "select s.slot_name::text as name, s.active_pid, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint as held, "
        "(select decoded_lsn::text from pgpulse.state) as decoded "
        "from pg_replication_slots s where s.slot_name = pgpulse.slot_name()"
    )
    if row is None:
        return None
    return SlotStatus(row["name"], row["active_pid"], int(row["held"]), row["decoded"])


async def enable_wal(conn: Any) -> str:
    """Create the publication and the replication slot if missing; returns the slot.

    Raises :class:`ConfigurationError` when the server cannot decode its WAL.
    """
    level = await conn.fetchval("select current_setting('wal_level')")
    if level != "logical":
        raise ConfigurationError(
            "the wal capture source needs wal_level = logical, this server has "
            f"{level!r}: "
            "set wal_level = logical in postgresql.conf and restart PostgreSQL, "
            "or watch with source='trigger' (the default)."
        )
    exists = await conn.fetchval(
        "select 1 from pg_publication where pubname = $1", PUBLICATION
    )
    if not exists:
        try:
            await conn.execute(
                f"create publication {PUBLICATION} "
                "with (publish_via_partition_root = true)"
            )
        except asyncpg.DuplicateObjectError:
            pass  # created concurrently
    slot = await slot_name(conn)
    if not await conn.fetchval(
        "select 1 from pg_replication_slots where slot_name = $1", slot
    ):
        try:
            await conn.execute(
                "select pg_create_logical_replication_slot($1, 'pgoutput')", slot
            )
        except asyncpg.DuplicateObjectError:
            pass
        except asyncpg.PostgresError as exc:
            raise ConfigurationError(
                f"could not create the replication slot {slot!r}: {exc}. The wal "
                "capture source needs a free replication slot (max_replication_slots) "
                "and a role "
                "with the REPLICATION attribute."
            ) from exc
    return slot


async def disable_wal_if_unused(conn: Any) -> str:
    """Retire the slot once no table is watched through the WAL any more.

    A slot nobody reads keeps every WAL segment from then on, so an unused slot
    must not outlive its last table, but it must not take undecoded changes with
    it either (changes committed while a table was still watched through the
    WAL).  So: a slot a gateway is reading is left to that gateway, which drops
    it once it has logged everything up to now; an idle slot is dropped here
    only if it holds no such change, else kept until a gateway has decoded them.
    Returns what happened: ``"in use"``, ``"none"``, ``"dropped"``, ``"kept"``.
    """
    if await wal_tables(conn):
        return "in use"
    slot = await slot_name(conn)
    row = await conn.fetchrow(
        "select active_pid from pg_replication_slots where slot_name = $1", slot
    )
    if row is None:
        return "none"
    if row["active_pid"] is not None:
        return "kept"  # the decoder drops it once caught up (pgpulse/decoder.py)
    try:
        pending = await conn.fetchval(
            "select count(*) from pg_logical_slot_peek_binary_changes($1, null, 1, "
            "'proto_version', '1', 'publication_names', $2)",
            slot,
            PUBLICATION,
        )
        if pending:
            log.warning(
                "replication slot %s still holds changes no gateway has logged yet: "
                "kept until a gateway decodes them (then it is dropped); drop it "
                "yourself with select pg_drop_replication_slot('%s') to discard them",
                slot,
                slot,
            )
            return "kept"
        await conn.execute("select pg_drop_replication_slot($1)", slot)
    except asyncpg.ObjectInUseError:
        return "kept"  # a gateway started reading it meanwhile
    except asyncpg.UndefinedObjectError:
        return "none"
    return "dropped"
