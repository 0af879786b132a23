"""docs/query.md stays true: every example prints exactly the SQL shown, and runs.

A ```python block followed by a ```sql block is an example: the Python is one
expression building a query on ``db``; the SQL block is ``builder.sql()`` (the
statement, then ``-- $n = value`` lines).  To refresh the page after changing
the renderer, run ``python -m tests.integration.test_query_docs`` with
``PGPULSE_DOCS_DSN`` set to a database holding query_schema.sql.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgpulse.query import QueryBuilder, QueryClient, connect
from pgpulse.routing.filters import parse_filters
from tests.integration.query_support import seeded_database

DOC = Path(__file__).parents[2] / "docs" / "query.md"
_BODY = r"((?:(?!```).)*)"
EXAMPLE = re.compile(rf"```python\n{_BODY}```\n\s*```sql\n{_BODY}```", re.S)


def examples(text: str) -> list[re.Match[str]]:
    return list(EXAMPLE.finditer(text))


def build(db: QueryClient, code: str) -> QueryBuilder:
    builder = eval(code, {"db": db, "parse_filters": parse_filters})
    assert isinstance(builder, QueryBuilder), code
    return builder


def sql_block(builder: QueryBuilder) -> str:
    statement, params = builder.sql()
    lines = [statement] + [f"-- ${i} = {value!r}" for i, value in enumerate(params, 1)]
    return "\n".join(lines) + "\n"


def regenerate(db: QueryClient, text: str) -> str:
    def fill(match: re.Match[str]) -> str:
        code = match.group(1)
        return f"```python\n{code}```\n\n```sql\n{sql_block(build(db, code))}```"

    return EXAMPLE.sub(fill, text)


@pytest.fixture(scope="module")
async def dsn(pg_server, template_db) -> AsyncIterator[str]:
    async with seeded_database(pg_server, template_db) as value:
        yield value


@pytest.fixture(scope="module")
async def db(dsn) -> AsyncIterator[QueryClient]:
    async with connect(dsn, min_size=1, max_size=1) as client:
        yield client


def test_the_page_has_an_example_for_every_builder_method():
    text = DOC.read_text()
    code = "\n".join(m.group(1) for m in examples(text))
    methods = [
        "select",
        "insert",
        "upsert",
        "update",
        "delete",
        "eq",
        "neq",
        "gt",
        "gte",
        "lt",
        "lte",
        "like",
        "ilike",
        "is_",
        "in_",
        "contains",
        "contained_by",
        "not_",
        "or_",
        "filter",
        "match",
        "where",
        "order",
        "limit",
        "range",
        "single",
        "table",
    ]
    missing = [m for m in methods if f".{m}(" not in code and f".{m}." not in code]
    assert missing == []
    assert len(examples(text)) >= 25


async def test_every_sql_block_is_what_the_builder_prints(db):
    for match in examples(DOC.read_text()):
        code, shown = match.group(1), match.group(2)
        assert sql_block(build(db, code)) == shown, f"docs/query.md is stale:\n{code}"


async def test_every_example_runs(db, dsn):
    conn = await asyncpg.connect(dsn)
    try:
        for match in examples(DOC.read_text()):
            transaction = conn.transaction()
            await transaction.start()
            try:
                result: Any = await build(db, match.group(1)).execute(conn)
                assert result.data is not None or "single" in match.group(1)
            finally:
                await transaction.rollback()
    finally:
        await conn.close()


async def _main() -> None:  # pragma: no cover - a maintenance helper
    async with connect(os.environ["PGPULSE_DOCS_DSN"], min_size=1, max_size=1) as db:
        DOC.write_text(regenerate(db, DOC.read_text()))


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main())
