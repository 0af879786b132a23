from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from pgpulse.capture.schema import install_schema
from tests.pg import TEMPLATE, TestServer, running_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    """A private PostgreSQL cluster for the whole session."""
    with running_server() as server:
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
def gateway_factory(database: str) -> Iterator[Any]:
    """Start real gateway processes on the test database; stopped afterwards."""
    from tests.gateway import GatewayProcess

    started: list[GatewayProcess] = []

    def start(*args: str, dsn: str | None = None) -> GatewayProcess:
        gw = GatewayProcess(dsn or database, args=list(args)).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.kill()
