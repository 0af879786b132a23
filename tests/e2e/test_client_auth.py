"""client.js with auth in Chromium: a token function renews expiring tokens and
the page's rows stay complete; a refused token is a clear error state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Page

from tests.e2e.support import deadline
from tests.e2e.test_client import SETUP
from tests.integration.auth_support import SECRET, token, two_tenants, write_config

pytestmark = pytest.mark.e2e

ENV = {"PGPULSE_JWT_SECRET": SECRET}


@deadline(90)
async def test_token_function_renews_and_nothing_is_lost(
    page: Page, conn, gateway_factory, tmp_path: Path
) -> None:
    await two_tenants(conn)
    gw = gateway_factory("--config", write_config(tmp_path), env=ENV)
    # The page asks the test for each new token (as it would its auth server).
    await page.expose_function(
        "newToken", lambda: token({"tenant_id": 1, "sub": "u"}, expires_in=2)
    )
    await page.goto(gw.url + "/healthz")
    await page.evaluate(SETUP)
    await page.evaluate(
        """() => {
             window.issued = 0;
             window.got = [];
             window.pulse = pg.connect({
               backoff: { initial: 50, max: 400 },
               token: async () => { window.issued++; return await newToken(); },
             });
             pulse.subscribe("docs", { onChange: (ev) => got.push(ev.pk.id) });
           }"""
    )
    await page.wait_for_function("() => pulse.state === 'live'")
    for i in range(1, 101):
        await conn.execute(
            "insert into docs values ($1, $2, 'x', 's')", i, 1 if i % 4 else 2
        )
        await asyncio.sleep(0.05)
    want = [i for i in range(1, 101) if i % 4]
    await page.wait_for_function(
        "(n) => got.length >= n", arg=len(want), timeout=30_000
    )
    assert await page.evaluate("() => got") == want
    assert await page.evaluate("() => issued") >= 3


@deadline(60)
async def test_a_refused_token_is_an_error_state_with_the_servers_message(
    page: Page, conn, gateway_factory, tmp_path: Path
) -> None:
    await two_tenants(conn)
    gw = gateway_factory("--config", write_config(tmp_path), env=ENV)
    await page.goto(gw.url + "/healthz")
    await page.evaluate(SETUP)
    await page.evaluate(
        """(bad) => {
             window.errors = [];
             window.pulse = pg.connect({ token: bad, backoff: { initial: 50 } });
             pulse.subscribe("docs", { onError: (e) => errors.push(e.message) });
           }""",
        token({"tenant_id": 1}, secret="y" * 64),
    )
    await page.wait_for_function("() => pulse.state === 'error'")
    detail = await page.evaluate("() => pulse.detail")
    assert detail["status"] == 401 and "invalid" in detail["message"]
