"""The query client: an asyncpg pool plus a catalog snapshot, handing out builders."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from types import TracebackType
from typing import Any

import asyncpg

from pgpulse.catalog import Catalog
from pgpulse.query._builder import QueryBuilder
from pgpulse.query._rpc import RpcCall
from pgpulse.query._schema import Exposure, Schema

__all__ = ["APPLICATION_NAME", "QueryClient", "connect"]

#: ``application_name`` of pooled connections, so they are easy to spot in
#: ``pg_stat_activity`` and in connection budgets.
APPLICATION_NAME = "pgpulse-query"


class QueryClient:
    """Builders over one pool; names are checked against a cached catalog.

    Build one with :func:`connect`, or wrap a pool you already have with
    :meth:`from_pool` (closing the client then leaves the pool open).
    """

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        catalog: Catalog,
        *,
        owns_pool: bool = False,
        hidden_schemas: Iterable[str] = (),
        exposure: Exposure | None = None,
    ) -> None:
        self._pool = pool
        self._owns_pool = owns_pool
        self._schema = Schema(catalog, hidden_schemas, exposure)

    @classmethod
    async def from_pool(
        cls,
        pool: asyncpg.Pool[Any],
        catalog: Catalog | None = None,
        *,
        hidden_schemas: Iterable[str] = (),
    ) -> QueryClient:
        """A client on an existing pool, sharing *catalog* or loading one."""
        if catalog is None:
            async with pool.acquire() as conn:
                catalog = await Catalog.load(conn)
        return cls(pool, catalog, hidden_schemas=hidden_schemas)

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        return self._pool

    @property
    def catalog(self) -> Catalog:
        return self._schema.catalog

    @property
    def schema(self) -> Schema:
        """The catalog as queries may see it (hidden schemas removed)."""
        return self._schema

    def table(self, name: str) -> QueryBuilder:
        """A builder on table *name* (``documents`` or ``schema.documents``)."""
        return QueryBuilder(self, name)

    def from_(self, name: str) -> QueryBuilder:
        """Same as :meth:`table` (supabase-py spells it both ways)."""
        return QueryBuilder(self, name)

    def rpc(self, name: str, params: Mapping[str, Any] | None = None) -> RpcCall:
        """Call the SQL function *name* (``fn`` or ``schema.fn``) with named
        arguments: ``await db.rpc("add", {"a": 1, "b": 2})``."""
        return RpcCall(self._pool, self.catalog.search_path, name, params or {})

    async def refresh_catalog(self) -> None:
        """Re-read tables, columns and foreign keys (after a migration)."""
        async with self._pool.acquire() as conn:
            await self._schema.catalog.refresh(conn)

    async def close(self) -> None:
        """Close the pool if this client opened it."""
        if self._owns_pool:
            await self._pool.close()

    async def __aenter__(self) -> QueryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _open(dsn: str | None, pool_kwargs: dict[str, Any]) -> QueryClient:
    settings = {"application_name": APPLICATION_NAME}
    settings.update(pool_kwargs.pop("server_settings", None) or {})
    pool = await asyncpg.create_pool(dsn, server_settings=settings, **pool_kwargs)
    try:
        async with pool.acquire() as conn:
            catalog = await Catalog.load(conn)
    except BaseException:
        await pool.close()
        raise
    return QueryClient(pool, catalog, owns_pool=True)


class _Connecting:
    """``await connect(...)`` or ``async with connect(...) as db``."""

    def __init__(self, dsn: str | None, pool_kwargs: dict[str, Any]) -> None:
        self._dsn = dsn
        self._kwargs = pool_kwargs
        self._client: QueryClient | None = None

    def __await__(self) -> Generator[Any, None, QueryClient]:
        return _open(self._dsn, dict(self._kwargs)).__await__()

    async def __aenter__(self) -> QueryClient:
        self._client = await _open(self._dsn, dict(self._kwargs))
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close()


def connect(dsn: str | None = None, **pool_kwargs: Any) -> _Connecting:
    """Open a pool (``asyncpg.create_pool(dsn, **pool_kwargs)``) and load the catalog.

    ``server_settings`` are merged over ``application_name=pgpulse-query``.
    Use as ``db = await connect(url)`` (then ``await db.close()``) or
    ``async with connect(url) as db``.
    """
    return _Connecting(dsn, pool_kwargs)
