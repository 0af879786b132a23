"""Setting up and tearing down the wal capture source of a database.

Why a separate step: the replication slot cannot be created inside a transaction
that wrote anything, and must exist before a table joins the publication (or its
first changes would precede the slot), while the publication must exist before
the slot (pgoutput looks the publication up as of each decoded change).  So
:func:`enable_wal` runs first, statement by statement, then ``pgpulse.watch``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from pgpulse.exceptions import ConfigurationError

__all__ = [
    "PUBLICATION",
    "disable_wal_if_unused",
    "enable_wal",
    "slot_name",
    "wal_tables",
]

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


async def disable_wal_if_unused(conn: Any) -> bool:
    """Drop the slot when no table is watched through the WAL any more.

    A slot nobody reads keeps every WAL segment from then on, so an unused slot
    must not outlive its last table.  A gateway still attached to it is
    disconnected first (it finds no slot and stops decoding).  Returns whether a
    slot was dropped.
    """
    if await wal_tables(conn):
        return False
    slot = await slot_name(conn)
    row = await conn.fetchrow(
        "select active_pid from pg_replication_slots where slot_name = $1", slot
    )
    if row is None:
        return False
    if row["active_pid"] is not None:
        await conn.execute("select pg_terminate_backend($1)", row["active_pid"])
    for _ in range(50):
        try:
            await conn.execute("select pg_drop_replication_slot($1)", slot)
            return True
        except asyncpg.ObjectInUseError:
            await asyncio.sleep(0.1)  # the walsender is still exiting
        except asyncpg.UndefinedObjectError:
            return False
    raise ConfigurationError(
        f"the replication slot {slot!r} is still in use; drop it with "
        f"select pg_drop_replication_slot('{slot}') once no gateway reads it."
    )
