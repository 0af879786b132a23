"""The live-query examples of docs/live.md (plain JS, React, Svelte), run in
Chromium exactly as written: each page's list must equal the database's
shipments, in order, and follow inserts, updates and deletes.  React and
Svelte come from the npm registry (tests/npm_packages.py), no bundler."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Page, Route

from tests.e2e.support import DemoGateway, deadline
from tests.npm_packages import unpkg_file

pytestmark = pytest.mark.e2e

DOC = Path(__file__).resolve().parents[2] / "docs" / "live.md"
_EXAMPLE = re.compile(r"```html\n<!-- example: (\w+) -->\n(.*?)```", re.S)


def examples() -> dict[str, str]:
    found = {name: body for name, body in _EXAMPLE.findall(DOC.read_text())}
    assert set(found) == {"plain", "react", "svelte"}, sorted(found)
    return found


async def _open(page: Page, gateway: DemoGateway, name: str) -> None:
    html = "<!doctype html><meta charset=utf-8>\n" + examples()[name]

    async def serve_page(route: Route) -> None:
        await route.fulfill(body=html, content_type="text/html")

    async def serve_npm(route: Route) -> None:
        body = unpkg_file(route.request.url)
        if body is None:
            await route.abort()
            return
        await route.fulfill(body=body, content_type="text/javascript")

    await page.route("https://unpkg.com/**", serve_npm)
    await page.route(f"{gateway.url}/example/{name}", serve_page)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{gateway.url}/example/{name}")
    assert not errors, errors


async def _shown(page: Page) -> list[str]:
    items: list[str] = await page.eval_on_selector_all(
        "#app li", "(items) => items.map((li) => li.textContent)"
    )
    return items


async def _until_equal(page: Page, db: asyncpg.Connection) -> None:
    want = [
        r["reference"]
        for r in await db.fetch("select reference from shipments order by id")
    ]
    await page.wait_for_function(
        "(want) => JSON.stringify([...document.querySelectorAll('#app li')]"
        ".map((li) => li.textContent)) === JSON.stringify(want)",
        arg=want,
    )


@pytest.mark.parametrize("name", ["plain", "react", "svelte"])
@deadline(60)
async def test_the_docs_live_examples_follow_the_database(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection, name: str
) -> None:
    await _open(page, gateway, name)
    await _until_equal(page, db)
    assert len(await _shown(page)) > 0
    await db.execute(
        "insert into shipments (reference, origin, destination) "
        "values ('EX-NEW', 'Oslo', 'Lima')"
    )
    await _until_equal(page, db)
    await db.execute(
        "update shipments set reference = 'EX-RENAMED' where reference = 'EX-NEW'"
    )
    await _until_equal(page, db)
    await db.execute("delete from shipments where reference = 'EX-RENAMED'")
    await _until_equal(page, db)
