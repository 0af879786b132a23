"""Checks before ``pgpulse serve`` starts: the database answers, the capture
schema is in place, the listener keeps its session (or the broker answers),
migrations apply, and the connections fit the declared budget.

Why before: the gateway never starts on a half-applied schema, through a
pooler that drops LISTEN, or over a connection budget; each says so in one
line instead of failing inside the server's startup.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from pgpulse.cli._common import console
from pgpulse.config import Settings

__all__ = ["gateway_connections", "preflight", "wait_for_database"]


def gateway_connections(settings: Settings, workers: int) -> int:
    """Connections *workers* gateway processes may hold: a listener (none
    behind a broker) and the pool each, and, while one of them decodes the
    WAL, its replication connection and its log writer (one decoder at a
    time per database)."""
    listener = 0 if settings.broker else 1
    decoder = 2 if settings.decode_wal else 0
    return workers * (listener + settings.pool_size) + decoder


async def wait_for_database(dsn: str, limit: float) -> Any:
    """Connect to *dsn*, waiting with back-off up to *limit* seconds while the
    server is not up yet (a boot-order race under compose or systemd)."""
    import asyncpg

    from pgpulse.backoff import Backoff

    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    backoff = Backoff(initial=0.2, maximum=3.0)
    told = False
    while True:
        try:
            return await asyncpg.connect(dsn, timeout=10)
        except (OSError, asyncpg.CannotConnectNowError, TimeoutError) as exc:
            if loop.time() >= deadline:
                raise click.ClickException(
                    f"the database did not answer within {limit:g} s ({exc}); check "
                    "--database-url, or wait longer with --wait-for-db"
                ) from None
            if not told:
                console.print(
                    f"[dim]waiting for the database ({exc}); retrying for up to "
                    f"{limit:g} s[/]"
                )
                told = True
            await backoff.wait()


async def check_broker(servers: list[str]) -> None:
    """A gateway behind a broker needs nats-py and a NATS server that answers."""
    try:
        import nats
    except ImportError:
        raise click.ClickException(
            "--broker needs the NATS client: pip install 'pgpulse[broker]'"
        ) from None
    try:
        nc = await nats.connect(
            servers=servers, connect_timeout=5, max_reconnect_attempts=0
        )
    except Exception as exc:
        raise click.ClickException(
            f"cannot reach the broker at {', '.join(servers)} ({exc}); check "
            "--broker and that nats-server runs with JetStream (-js)"
        ) from None
    await nc.close()


async def preflight(
    settings: Settings,
    workers: int,
    migrate: bool,
    migrations_dir: str,
    config: str | None,
    wait_for_db: float = 30.0,
) -> None:
    """Apply migrations and check the connection budget before serving.

    The deploy pattern: the gateway never starts on a half-applied schema, and
    never starts when its connections would not fit the declared budget.
    """
    import asyncpg

    from pgpulse.budget import check_budget, load_budget
    from pgpulse.capture import install_schema
    from pgpulse.capture.privileges import check_schema
    from pgpulse.log.listener import CHANNEL, check_session

    # Fail here, with one clear line, rather than inside the server's startup.
    conn = await wait_for_database(settings.database_url, wait_for_db)
    try:
        await check_schema(conn)
        await install_schema(conn)
    finally:
        await conn.close()
    if settings.broker:
        await check_broker(settings.broker)
    else:
        listener_url = settings.listener_url or settings.database_url
        probe = await asyncpg.connect(listener_url, timeout=10)
        try:
            await probe.execute(f"listen {CHANNEL}")
            await check_session(probe, listener_url)
        finally:
            await probe.close()
    if migrate:
        from pgpulse.migrate import MigrationError, apply_migrations

        try:
            applied = await apply_migrations(settings.database_url, migrations_dir)
        except MigrationError as exc:
            raise click.ClickException(
                f"not starting: migration failed.\n{exc}"
            ) from None
        console.print(f"migrations: {len(applied)} applied, schema up to date")
    budget = load_budget(config)
    if budget is None:
        return
    needed = gateway_connections(settings, workers)
    share = budget.share_for("pgpulse")
    if share is not None and share < needed:
        decoder = " + 2 for the wal decoder" if settings.decode_wal else ""
        raise click.ClickException(
            f"not starting: the budget gives service 'pgpulse' {share} connections "
            f"but {workers} gateway process(es) need {needed} ("
            f"{'' if settings.broker else '1 listener + '}"
            f"{settings.pool_size} pooled each{decoder}). Raise [budget.services] "
            "pgpulse, lower --workers, or pass --no-decode-wal."
        )
    report = await check_budget(settings.database_url, budget)
    if not report.fits:
        raise click.ClickException(f"not starting: {report.message}")
