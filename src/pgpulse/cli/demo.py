"""``pgpulse demo``: the whole thing in one command."""

from __future__ import annotations

import asyncio
import contextlib
import webbrowser

import asyncpg
import click

from pgpulse.cli._common import (
    console,
    database_option,
    resolve_database,
    run,
    setup_logging,
)
from pgpulse.config import Settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--writer-interval",
    default=1.0,
    show_default=True,
    type=float,
    help="Seconds between demo writes (0 disables the writer).",
)
@click.option(
    "--browser/--no-browser",
    default=True,
    show_default=True,
    help="Open the page in a browser.",
)
@click.option("-v", "--verbose", is_flag=True)
@database_option
def demo(
    host: str,
    port: int,
    writer_interval: float,
    browser: bool,
    verbose: bool,
    database_url: str | None,
) -> None:
    """Create a sample schema, watch it, and serve a live page at /."""
    setup_logging(verbose)
    dsn = resolve_database(database_url)
    settings = Settings(
        database_url=dsn, host=host, port=port, rest_enabled=True, demo=True
    )
    run(_demo(settings, writer_interval, browser))


async def _demo(settings: Settings, writer_interval: float, browser: bool) -> None:
    import uvicorn

    from pgpulse.demo.auth import DemoAuth
    from pgpulse.demo.writer import install_demo, write_forever
    from pgpulse.server.app import GatewayServer, create_app

    conn = await asyncpg.connect(settings.database_url)
    try:
        await install_demo(conn)
    finally:
        await conn.close()
    url = f"http://{settings.host}:{settings.port}/"
    demo_auth = DemoAuth()
    app = create_app(settings, auth=demo_auth.settings)
    app.starlette.add_route("/demo/token", demo_auth.endpoint)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = GatewayServer(config)
    writer = (
        asyncio.create_task(write_forever(settings.database_url, writer_interval))
        if writer_interval > 0
        else None
    )
    console.print(
        f"[bold green]pgpulse demo[/] live at [bold]{url}[/]  (Ctrl-C to stop)"
    )
    if browser:
        asyncio.get_running_loop().call_later(1.0, webbrowser.open, url)
    try:
        await server.serve()
    finally:
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
    console.print("pgpulse demo stopped")
