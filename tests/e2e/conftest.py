"""Fixtures for the browser tests: real Chromium, a real `pgpulse demo` process,
real PostgreSQL (a fresh database per test, from ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any

import asyncpg
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.e2e.support import CHROMIUM_ARGS, DemoGateway, chromium_executable

#: Default wait of Playwright actions and expectations, in milliseconds.
PLAYWRIGHT_TIMEOUT_MS = 15_000


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    # Keep each phase's report on the item so fixtures can tell a failed test.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "report_call", None)
    return report is None or report.failed


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's headless Chromium, launched once per session."""
    executable = chromium_executable()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A page in a fresh browser context; uncaught page errors fail the test."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(PLAYWRIGHT_TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    console: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    try:
        yield page
    finally:
        await context.close()
        if _failed(request) and console:
            print("browser console:\n  " + "\n  ".join(console[-40:]))
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def gateway_serve() -> bool:
    """Whether ``gateway`` is ``pgpulse serve`` (no auth, no demo tables)
    instead of ``pgpulse demo``; a test module overrides this fixture."""
    return False


@pytest.fixture
async def gateway(
    database: str, gateway_serve: bool, request: pytest.FixtureRequest
) -> AsyncIterator[DemoGateway]:
    """`pgpulse demo` on a free port, writer disabled, serving the test database.

    The demo creates and seeds ``shipments`` and ``documents`` on start (and
    runs with its two users' auth).  Tests may ``kill()`` it and ``await
    start()`` it again on the same port.
    """
    gw = DemoGateway(database, serve=gateway_serve)
    await gw.start()
    try:
        yield gw
    finally:
        if _failed(request):
            print(f"pgpulse demo log ({gw.log_path}):\n{gw.log()}")
        gw.cleanup()


@pytest.fixture
async def db(gateway: DemoGateway) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the demo database, once the demo schema exists."""
    connection = await asyncpg.connect(gateway.dsn)
    try:
        yield connection
    finally:
        await connection.close()
