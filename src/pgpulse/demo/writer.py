"""A small writer that changes demo rows, as an application would."""

from __future__ import annotations

import asyncio
import logging
import random
from importlib import resources
from typing import Any

import asyncpg

from pgpulse import capture
from pgpulse.demo.auth import USERS

__all__ = ["install_demo", "write_forever", "write_once"]

log = logging.getLogger("pgpulse.demo")

KINDS = [
    "Bill of lading",
    "Commercial invoice",
    "Packing list",
    "Certificate of origin",
    "Customs declaration",
    "Insurance certificate",
]
DOC_STATUSES = ["draft", "review", "approved", "rejected"]
SHIP_STATUSES = ["booked", "in_transit", "arrived", "delivered"]


async def install_demo(conn: Any) -> None:
    """Create and seed the demo tables (idempotent) and watch them."""
    sql = resources.files("pgpulse.demo").joinpath("schema.sql").read_text()
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(7301)")
        await conn.execute(sql)
    await capture.watch(conn, "shipments")
    await capture.watch(conn, "documents")
    await capture.watch(conn, "notifications")


async def write_once(conn: Any, rng: random.Random) -> str:
    """One realistic change; returns what it did."""
    action = rng.choices(
        ["update", "insert", "delete", "ship", "notify"], [6, 2, 1, 1, 2]
    )[0]
    if action == "notify":
        user = rng.choice(USERS)
        row = await conn.fetchrow(
            "select d.id, d.title, d.status from documents d order by random() limit 1"
        )
        message = f"{row['title']} is {row['status']}" if row else "nothing new today"
        await conn.execute(
            "insert into notifications (recipient, message) values ($1, $2)",
            user,
            message,
        )
        await conn.execute(  # each user keeps their latest 20
            "delete from notifications where recipient = $1 and id not in "
            "(select id from notifications where recipient = $1 "
            "order by id desc limit 20)",
            user,
        )
        return f"notified {user}: {message}"
    if action == "insert":
        shipment = await conn.fetchval(
            "select id from shipments order by random() limit 1"
        )
        kind = rng.choice(KINDS)
        await conn.execute(
            "insert into documents (shipment_id, kind, title) "
            "select $1, $2, $2 || ' ' || reference from shipments where id = $1",
            shipment,
            kind,
        )
        return f"new {kind} for shipment {shipment}"
    if action == "delete":
        count = await conn.fetchval("select count(*) from documents")
        if count > 8:
            doc = await conn.fetchval(
                "delete from documents where id = (select id from documents "
                "order by random() limit 1) returning id"
            )
            return f"deleted document {doc}"
        return "nothing to delete"
    if action == "ship":
        row = await conn.fetchrow(
            "update shipments set status = $1, updated_at = now() where id = "
            "(select id from shipments order by random() limit 1) returning id",
            rng.choice(SHIP_STATUSES),
        )
        return f"shipment {row['id'] if row else '-'} status changed"
    doc = await conn.fetchval(
        "update documents set status = $1, updated_at = now() where id = "
        "(select id from documents order by random() limit 1) returning id",
        rng.choice(DOC_STATUSES),
    )
    return f"document {doc} status changed"


async def write_forever(dsn: str, interval: float) -> None:
    """Keep writing every *interval* seconds; survives database restarts."""
    rng = random.Random()
    while True:
        try:
            conn = await asyncpg.connect(
                dsn, server_settings={"application_name": "pgpulse-demo-writer"}
            )
            try:
                while True:
                    await asyncio.sleep(interval * rng.uniform(0.5, 1.5))
                    log.debug(await write_once(conn, rng))
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("demo writer: %s; retrying", exc)
            await asyncio.sleep(1)
