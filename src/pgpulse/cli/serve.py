"""``pgpulse serve``: the gateway."""

from __future__ import annotations

import os
from typing import Any

import click

from pgpulse.auth.config import load_auth
from pgpulse.cli._common import (
    console,
    database_option,
    resolve_database,
    run,
    setup_logging,
)
from pgpulse.config import Settings
from pgpulse.exceptions import PgPulseError


def parse_duration(text: str) -> float:
    """``30s``, ``15m``, ``12h``, ``7d`` → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(
            f"{text!r} is not a duration; use e.g. 90s, 15m, 12h or 7d"
        ) from None


def gateway_options(func: click.decorators.FC) -> click.decorators.FC:
    options = [
        click.option("--host", default="127.0.0.1", show_default=True),
        click.option("--port", default=8000, show_default=True, type=int),
        click.option(
            "--cors-origin",
            "cors_origins",
            multiple=True,
            metavar="ORIGIN",
            help="Allow this browser origin (repeat).",
        ),
        click.option(
            "--rest/--no-rest",
            default=None,
            help="Serve GET /v1/rest/{table} reads (env PGPULSE_REST=1; on by "
            "default with auth).",
        ),
        click.option(
            "--listener-url",
            envvar="PGPULSE_LISTENER_URL",
            default=None,
            metavar="URL",
            help="A direct connection for the listener when --database-url goes "
            "through a pooler in transaction mode (PgBouncer).",
        ),
        click.option(
            "--rest-table",
            "rest_tables",
            multiple=True,
            metavar="TABLE",
            help="Open a table for REST though it is not watched (all its "
            "columns; repeat). Watched tables are exposed with their published "
            "columns.",
        ),
        click.option(
            "--rest-schema",
            "rest_schemas",
            multiple=True,
            metavar="SCHEMA",
            help="Schema REST exposes (repeat; default: public).",
        ),
        click.option(
            "--retention",
            default="7d",
            show_default=True,
            help="Prune changes older than this (0 = never).",
        ),
        click.option(
            "--keep-rows",
            type=int,
            default=None,
            help="Also keep at most this many changes.",
        ),
        click.option(
            "--heartbeat",
            default=15.0,
            show_default=True,
            type=float,
            help="Seconds between SSE heartbeats.",
        ),
        click.option(
            "--keepalive",
            default=5.0,
            show_default=True,
            type=float,
            help="Seconds between idle listener keepalive reads.",
        ),
        click.option(
            "--outbox-limit",
            default=16 * 1024 * 1024,
            show_default=True,
            type=click.IntRange(1024),
            metavar="BYTES",
            help="How far a client may fall behind before it is cut off.",
        ),
        click.option(
            "--query-timeout",
            default=10.0,
            show_default=True,
            type=float,
            help="Seconds before a silent database connection counts as dead.",
        ),
        click.option(
            "--prune-every",
            default=60.0,
            show_default=True,
            type=float,
            help="Seconds between automatic prunes of the change log.",
        ),
        click.option(
            "--decode-wal/--no-decode-wal",
            default=True,
            show_default=True,
            help="Decode tables watched with --source wal here (one process of all "
            "gateways does at a time).",
        ),
        click.option("-v", "--verbose", is_flag=True, help="Debug logging."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_settings(
    database_url: str,
    host: str,
    port: int,
    cors_origins: tuple[str, ...],
    rest: bool | None,
    retention: str,
    keep_rows: int | None,
    heartbeat: float = 15.0,
    keepalive: float = 5.0,
    rest_tables: tuple[str, ...] = (),
    rest_schemas: tuple[str, ...] = (),
    listener_url: str | None = None,
    outbox_limit: int = 16 * 1024 * 1024,
    query_timeout: float = 10.0,
    prune_every: float = 60.0,
    decode_wal: bool = True,
) -> Settings:
    if rest is None:
        rest = os.environ.get("PGPULSE_REST", "") in ("1", "true", "yes")
    seconds = parse_duration(retention)
    if keep_rows is not None and keep_rows < 0:
        raise click.BadParameter("--keep-rows must be >= 0")
    return Settings(
        database_url=database_url,
        host=host,
        port=port,
        cors_origins=list(cors_origins),
        rest_enabled=rest,
        rest_tables=list(rest_tables),
        listener_url=listener_url,
        rest_schemas=list(rest_schemas) or ["public"],
        retention_seconds=seconds or None,
        retention_rows=keep_rows,
        heartbeat=heartbeat,
        keepalive=keepalive,
        outbox_limit=outbox_limit,
        query_timeout=query_timeout,
        prune_interval=prune_every,
        decode_wal=decode_wal,
    )


def run_gateway(settings: Settings, workers: int = 1) -> None:
    """Serve until interrupted (several processes with *workers* > 1)."""
    import uvicorn

    console.print(
        f"[bold green]pgpulse[/] gateway on http://{settings.host}:{settings.port} "
        f"({workers} process{'es' if workers > 1 else ''})"
    )
    if workers > 1:
        os.environ["PGPULSE_SETTINGS"] = settings.to_env()
        uvicorn.run(
            "pgpulse.server.app:app_from_env",
            factory=True,
            workers=workers,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
    else:
        from pgpulse.server.app import create_app

        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )


async def preflight(
    settings: Settings,
    workers: int,
    migrate: bool,
    migrations_dir: str,
    config: str | None,
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
    conn = await asyncpg.connect(settings.database_url, timeout=10)
    try:
        await check_schema(conn)
        await install_schema(conn)
    finally:
        await conn.close()
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
    needed = workers * (1 + settings.pool_size)
    share = budget.share_for("pgpulse")
    if share is not None and share < needed:
        raise click.ClickException(
            f"not starting: the budget gives service 'pgpulse' {share} connections "
            f"but {workers} gateway process(es) need {needed} (1 listener + "
            f"{settings.pool_size} pooled each). Raise [budget.services] pgpulse "
            "or lower --workers."
        )
    report = await check_budget(settings.database_url, budget)
    if not report.fits:
        raise click.ClickException(f"not starting: {report.message}")


@click.command()
@gateway_options
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Gateway processes (each with its own listener connection).",
)
@click.option(
    "--migrate",
    is_flag=True,
    help="Apply pending migrations first; refuse to start if one fails.",
)
@click.option(
    "--migrations-dir",
    default="migrations",
    show_default=True,
    envvar="PGPULSE_MIGRATIONS",
    help="Directory of migration files (with --migrate).",
)
@click.option(
    "--config",
    default=None,
    metavar="FILE",
    help="pgpulse.toml with the connection budget, [auth] and [policies] "
    "(default: ./pgpulse.toml or [tool.pgpulse] in ./pyproject.toml).",
)
@database_option
def serve(
    database_url: str | None,
    workers: int,
    migrate: bool,
    migrations_dir: str,
    config: str | None,
    verbose: bool,
    **options: Any,
) -> None:
    """Run the gateway: SSE at /v1/events, WebSocket at /v1/ws."""
    setup_logging(verbose)
    settings = build_settings(resolve_database(database_url), **options)
    settings.workers = workers
    settings.config_file = config
    try:
        # A bad policy or a secret in the file stops here, with its message.
        load_auth(config)
    except PgPulseError as exc:
        raise click.ClickException(f"not starting: {exc}") from None
    run(preflight(settings, workers, migrate, migrations_dir, config))
    run_gateway(settings, workers)
