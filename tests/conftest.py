from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from pgpulse.capture.schema import install_schema
from tests.pg import BUILDS, TEMPLATE, TestServer, running_server


@pytest.fixture(scope="session", params=BUILDS, ids=["pg-embedded", "pg-system"])
def pg_server(request: pytest.FixtureRequest) -> Iterator[TestServer]:
    """A private PostgreSQL cluster per build, for the whole session: every
    database test runs on the embedded PostgreSQL and on the distribution's."""
    with running_server(request.param) as server:
        yield server


@pytest.fixture(scope="session")
async def template_db(pg_server: TestServer) -> str:
    """A template database with the capture schema and pg_stat_statements."""
    admin = await asyncpg.connect(pg_server.dsn())
    try:
        await admin.execute(f"create database {TEMPLATE}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(pg_server.dsn(TEMPLATE))
    try:
        await conn.execute("create extension if not exists pg_stat_statements")
        await install_schema(conn)
    finally:
        await conn.close()
    return TEMPLATE


async def drop_slots(admin: asyncpg.Connection, database: str) -> None:
    """Replication slots (wal capture source) keep a database from being dropped."""
    for _ in range(100):
        slots = await admin.fetch(
            "select slot_name, active_pid from pg_replication_slots "
            "where database = $1",
            database,
        )
        if not slots:
            return
        for slot in slots:
            if slot["active_pid"] is not None:
                await admin.execute(
                    "select pg_terminate_backend($1)", slot["active_pid"]
                )
            else:
                try:
                    await admin.execute(
                        "select pg_drop_replication_slot($1)", slot["slot_name"]
                    )
                except asyncpg.PostgresError:
                    pass  # became active again, or dropped meanwhile
        await asyncio.sleep(0.05)


@pytest.fixture
async def database(pg_server: TestServer, template_db: str) -> AsyncIterator[str]:
    """A fresh database for one test; yields its DSN."""
    name = pg_server.new_database_name()
    admin = await asyncpg.connect(pg_server.dsn())
    try:
        await admin.execute(f"create database {name} template {template_db}")
    finally:
        await admin.close()
    yield pg_server.dsn(name)
    admin = await asyncpg.connect(pg_server.dsn())
    try:
        await drop_slots(admin, name)
        await admin.execute(f"drop database if exists {name} with (force)")
    finally:
        await admin.close()


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def nats_server() -> Iterator[Any]:
    """A NATS server with JetStream of the test's own (tests/nats_server.py)."""
    from tests.nats_server import NatsServer

    server = NatsServer().start()
    yield server
    server.remove()


@pytest.fixture
def gateway_factory(database: str) -> Iterator[Any]:
    """Start real gateway processes on the test database; stopped afterwards."""
    from tests.gateway import GatewayProcess

    started: list[GatewayProcess] = []

    def start(
        *args: str, dsn: str | None = None, env: dict[str, str] | None = None
    ) -> GatewayProcess:
        gw = GatewayProcess(dsn or database, args=list(args), env=env or {}).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.kill()
