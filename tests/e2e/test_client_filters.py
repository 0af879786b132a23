"""client.js selects exactly the rows PostgreSQL selects (Chromium, real gateway).

Many subscriptions with random filters share one page's connection, all on the
same table, so the server must tell the client which subscription sees each
change and how (client.js evaluates no filter itself).  Rows are inserted,
moved between filters by updates and deleted; each subscription must receive
exactly the events PostgreSQL's own answers imply.
"""

from __future__ import annotations

import os
from typing import Any

import asyncpg
import pytest
from playwright.async_api import Page

from pgpulse import capture
from tests.e2e.support import DemoGateway, deadline
from tests.e2e.test_client import open_client, wait_live
from tests.integration.filter_cases import (
    Generator,
    create_table,
    refused,
    write_and_follow,
)

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("PGPULSE_FILTER_SEED", int.from_bytes(os.urandom(4), "big")))
SUBSCRIPTIONS = 40
ROWS = 80


@pytest.fixture
def gateway_serve() -> bool:
    """`pgpulse serve` without auth: the table under test is the test's own."""
    return True


@deadline(120)
@pytest.mark.parametrize("seed", [20261204, SEED], ids=["fixed-seed", "fresh-seed"])
async def test_client_js_routes_each_subscription_exactly_as_postgresql_selects(
    seed: int, page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    columns = await create_table(db, json=False)
    await capture.watch(db, "diff")
    generator = Generator(seed, columns)
    cases: list[Any] = []
    while len(cases) < SUBSCRIPTIONS:
        case = generator.filter()
        if await refused(db, case) is None:
            cases.append(case)
    await open_client(page, gateway)
    await page.evaluate(
        """(filters) => {
             window.got = filters.map(() => []);
             window.failed = [];
             filters.forEach((filter, k) => pulse.subscribe("diff", {
               filter,
               onChange: (ev) => got[k].push([ev.op, ev.pk.id, ev.moved === true]),
               onError: (err) => failed.push([filter, err.message]),
             }));
           }""",
        [c.text for c in cases],
    )
    await wait_live(page)
    expected = await write_and_follow(gateway.dsn, db, generator, columns, cases, ROWS)
    total = sum(len(e) for e in expected)
    await page.wait_for_function(
        "(total) => got.reduce((n, g) => n + g.length, 0) >= total || failed.length",
        arg=total,
        timeout=60_000,
    )
    assert await page.evaluate("() => failed") == []
    got: list[list[Any]] = await page.evaluate("() => got")
    wrong = [
        f"{case.text!r}: {sorted(map(tuple, events))[:6]} != {want[:6]}"
        for case, events, want in zip(cases, got, expected, strict=True)
        if sorted(map(tuple, events)) != want
    ]
    assert not wrong, f"seed {seed}:\n" + "\n".join(wrong)
