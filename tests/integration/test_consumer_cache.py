"""Cache invalidation as a consumer group, against a real redis-server of the
test's own: keys deleted or refreshed for exactly the changed rows, and no
invalidation lost while Redis or the worker is down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

import pgpulse
from pgpulse import capture
from pgpulse.consumers.cache import invalidate
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


async def _until(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0
) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {timeout:g} s: {what}") from None


async def _present(r: aioredis.Redis, ids: range | list[int]) -> set[int]:
    values = await r.mget([f"doc:{i}" for i in ids])
    return {i for i, v in zip(ids, values, strict=True) if v is not None}


async def _joined(conn: asyncpg.Connection, group: str) -> bool:
    held = await conn.fetchval(
        "select count(*) from pgpulse.consumer_partitions "
        "where group_name = $1 and lease_until > now()",
        group,
    )
    return bool(held)


async def test_invalidations_survive_redis_and_worker_outages(
    conn, database, redis_server
):
    await conn.execute(
        "create table documents (id int primary key, title text, version int)"
    )
    await conn.execute(
        "insert into documents select i, 'doc ' || i, 1 from generate_series(1, 20) i"
    )
    await capture.watch(conn, "documents")
    r = aioredis.from_url(redis_server.url)
    await r.mset({f"doc:{i}": "stale" for i in [*range(1, 21), 100]})

    async def work() -> None:
        async with pgpulse.consumer(
            database, group="doc-cache", tables=["documents"], lease_ttl=2.0
        ) as worker:
            cache = aioredis.from_url(redis_server.url, socket_timeout=2)
            try:
                await invalidate(worker, cache, key="doc:{id}", backoff_max=1.0)
            finally:
                await cache.aclose()

    async def update(ids: range) -> None:
        await conn.execute(
            "update documents set version = version + 1 where id = any($1::int[])",
            list(ids),
        )

    task = asyncio.create_task(work())
    try:
        await _until(lambda: _joined(conn, "doc-cache"), "the worker joined")
        await update(range(1, 6))
        await _until(
            lambda: _absent(r, range(1, 6)), "doc:1..5 invalidated after updates"
        )
        assert await _present(r, range(6, 21)) == set(range(6, 21))

        # Redis down while rows change: the invalidations wait for it.
        redis_server.stop()
        await update(range(6, 11))
        await asyncio.sleep(2.5)  # several failed attempts
        redis_server.start()  # the append-only file brings doc:6..20 back
        await _until(
            lambda: _absent(r, range(6, 11)), "doc:6..10 invalidated after Redis"
        )
        assert await _present(r, range(11, 21)) == set(range(11, 21))

        # The worker down while rows change: a new one continues the group.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await update(range(11, 16))
        task = asyncio.create_task(work())
        await _until(
            lambda: _absent(r, range(11, 16)), "doc:11..15 invalidated by a restart"
        )
        assert await _present(r, range(16, 21)) == set(range(16, 21))

        # DELETE, and an UPDATE that moves the key: both keys go.
        await conn.execute("delete from documents where id = 16")
        await conn.execute("update documents set id = 100 where id = 17")
        await _until(lambda: _absent(r, [16, 17, 100]), "doc:16, 17 and 100 gone")
        assert await _present(r, range(18, 21)) == set(range(18, 21))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.aclose()


async def _absent(r: aioredis.Redis, ids: range | list[int]) -> bool:
    return not await _present(r, ids)


def _cli(*args: str, dsn: str) -> list[str]:
    return [sys.executable, "-m", "pgpulse", *args, "--database-url", dsn]


class Consume:
    """``pgpulse consume`` in its own process, its output in a file."""

    def __init__(self, dsn: str, args: list[str], log: Path) -> None:
        self.argv = _cli("consume", *args, dsn=dsn)
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=out, stderr=out
            )

        async def started() -> bool:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"pgpulse consume exited:\n{self.output()}")
            return b"consuming" in self.log.read_bytes()[offset:]

        await _until(started, "pgpulse consume started")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()


async def test_consume_refreshes_redis_keys_with_the_exact_row(
    conn, database, redis_server, tmp_path
):
    await conn.execute(
        "create table docs (id int primary key, slug text unique, "
        "price numeric, body jsonb)"
    )
    await capture.watch(conn, "docs")
    r = aioredis.from_url(redis_server.url)
    consume = Consume(
        database,
        [
            "docs-cache",
            "--table",
            "docs",
            "--redis",
            redis_server.url,
            "--key",
            "doc:{slug}",
            "--refresh",
            "--ttl",
            "1h",
        ],
        tmp_path / "consume.log",
    )
    await consume.start()

    async def logged_row() -> dict[str, object]:
        text = await conn.fetchval(
            "select row::text from pgpulse.changes where tbl = 'public.docs' "
            "order by id desc limit 1"
        )
        return json.loads(text)  # type: ignore[no-any-return]

    async def holds(key: str, expected: dict[str, object] | None) -> bool:
        value = await r.get(key)
        if expected is None:
            return value is None
        return value is not None and json.loads(value) == expected

    try:
        await conn.execute(
            "insert into docs values (1, 'a', 1.10, '{\"n\": 12345678901234567890}')"
        )
        row = await logged_row()
        await _until(lambda: holds("doc:a", row), "doc:a refreshed")
        raw = await r.get("doc:a")
        assert isinstance(raw, bytes)
        assert b"1.10" in raw and b"12345678901234567890" in raw  # exact numbers
        ttl = await r.pttl("doc:a")
        assert 0 < ttl <= 3_600_000

        await conn.execute("update docs set slug = 'b', price = 2.50 where id = 1")
        row = await logged_row()
        await _until(lambda: holds("doc:b", row), "doc:b holds the moved row")
        assert await r.get("doc:a") is None

        # SIGKILL the worker; changes meanwhile arrive once a new one runs.
        await consume.kill()
        await conn.execute("update docs set price = 3.75 where id = 1")
        row = await logged_row()
        await conn.execute("insert into docs values (2, 'c', 0, null)")
        await conn.execute("delete from docs where id = 2")
        await r.set("doc:c", "stale")
        await consume.start()
        await _until(lambda: holds("doc:b", row), "doc:b refreshed after a restart")
        await _until(lambda: holds("doc:c", None), "doc:c deleted after a restart")

        await conn.execute("delete from docs where id = 1")
        await _until(lambda: holds("doc:b", None), "doc:b deleted")
    except AssertionError:
        print(consume.output())
        raise
    finally:
        await consume.kill()
        await r.aclose()


async def test_consume_redis_refuses_bad_input_with_the_reason(
    conn, database, redis_server
):
    await conn.execute("create table docs (id int primary key, slug text)")
    await capture.watch(conn, "docs")
    url = redis_server.url
    base = ["consume", "g", "--table", "docs"]
    cases = [
        ([*base, "--redis", url], "--key"),
        ([*base, "--redis", url, "--key", "doc:{nope}"], "nope"),
        ([*base, "--redis", url, "--key", "doc"], "names no column"),
        ([*base, "--redis", url, "--key", "doc:{id"], "doc:{id"),
        ([*base, "--redis", url, "--key", "doc:{id!r}"], "not a column name"),
        ([*base, "--redis", "http://x", "--key", "doc:{id}"], "redis://"),
        ([*base, "--redis", url, "--key", "doc:{id}", "--ttl", "1h"], "--refresh"),
        ([*base, "--exec", "true", "--key", "doc:{id}"], "--redis"),
        ([*base, "--redis", url, "--exec", "true", "--key", "x:{id}"], "exactly one"),
    ]
    for args, needle in cases:
        proc = await asyncio.create_subprocess_exec(
            *_cli(*args, dsn=database),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ),
        )
        _, err = await proc.communicate()
        text = err.decode()
        assert proc.returncode != 0, args
        assert needle in text, (args, text)
        assert "Traceback" not in text, (args, text)
    # Nothing was created for a refused start.
    assert await conn.fetchval("select count(*) from pgpulse.consumer_groups") == 0
