"""Every Python block in the README and docs/ runs, as a user would paste it.

A block is a whole script (imports, ``asyncio.run``), run in a subprocess with
``DATABASE_URL`` (a database with the demo's tables, watched) and
``PGPULSE_URL`` (a gateway on it); streaming examples stop after one change,
which the test writes once they are listening.  A block that cannot stand
alone says so with ``<!-- fragment: why -->`` on the line before it; the
examples of docs/query.md followed by their SQL are checked by
test_query_docs.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path

import asyncpg
import pytest

from pgpulse import capture

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BODY = r"((?:(?!```).)*)"
_PAIRED = re.compile(rf"```python\n{_BODY}```\n\s*```sql\n{_BODY}```", re.S)
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        text = page.read_text()
        paired = [m.span() for m in _PAIRED.finditer(text)]
        for match in _BLOCK.finditer(text):
            if any(a <= match.start() < b for a, b in paired):
                continue
            before = text[: match.start()].rstrip().splitlines()[-1:]
            if before and before[0].startswith("<!-- fragment:"):
                continue
            line = text[: match.start()].count("\n") + 1
            out.append((f"{page.name}:{line}", match.group(1)))
    return out


BLOCKS = blocks()


def test_every_python_block_is_runnable_or_marked_a_fragment():
    assert len(BLOCKS) >= 4
    for where, code in BLOCKS:
        assert "asyncio.run(" in code or "await" not in code, where


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[w for w, _ in BLOCKS])
async def test_docs_python_block_runs(where, code, conn, database, gateway_factory):
    await conn.execute("create table shipments (id int primary key, reference text)")
    await conn.execute(
        "create table documents (id int primary key, shipment_id int "
        "references shipments, title text, status text)"
    )
    await conn.execute("insert into shipments values (42, 'S-42')")
    await conn.execute(
        "insert into documents values (2, 42, 'Packing list #2', 'final')"
    )
    await capture.watch(conn, "documents")
    gw = gateway_factory("--rest")
    script = Path(tempfile.mkdtemp()) / "snippet.py"
    script.write_text(code)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        env={**os.environ, "DATABASE_URL": database, "PGPULSE_URL": gw.url},
        cwd=script.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    writes = asyncio.create_task(_keep_writing(database))
    try:
        async with asyncio.timeout(60):
            _out, err = await proc.communicate()
    finally:
        writes.cancel()
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, f"{where} failed:\n{err.decode()}"


async def _keep_writing(dsn: str) -> None:
    """Changes for streaming examples to receive, whenever they listen."""
    writer = await asyncpg.connect(dsn)
    try:
        for i in range(100, 10_000):
            await writer.execute(
                "insert into documents values ($1, 42, 'new', 'draft')", i
            )
            await asyncio.sleep(0.3)
    finally:
        await writer.close()
