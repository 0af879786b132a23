"""``pgpulse consume`` (run a sink for a consumer group) and ``pgpulse
consumers`` (list groups, their lag and dead letters; retry; drop)."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import time

import asyncpg
import click
from rich.table import Table

from pgpulse.cli._common import (
    async_command,
    console,
    database_option,
    out,
    resolve_database,
    setup_logging,
)
from pgpulse.cli.serve import parse_duration
from pgpulse.consumers.cache import KeyTemplate, key_templates, redis_sink
from pgpulse.consumers.consumer import Consumer
from pgpulse.consumers.dead_letters import list_dead_letters, request_retry
from pgpulse.consumers.sinks import (
    SinkStats,
    exec_sink,
    run_sink,
    webhook_sink,
)
from pgpulse.consumers.stats import group_stats

__all__ = ["consume", "consumers"]


@click.command()
@click.argument("group")
@click.option(
    "--table", "tables", multiple=True, required=True, help="A table to read (repeat)."
)
@click.option("--filter", "filter_text", default="", metavar="COL=OP.VALUE;...")
@click.option(
    "--exec",
    "command",
    default=None,
    metavar="CMD",
    help="Run CMD per batch, one JSON line per change on its stdin; exit 0 acks.",
)
@click.option(
    "--webhook",
    default=None,
    metavar="URL",
    help="POST each batch to URL, signed with $PGPULSE_WEBHOOK_SECRET; 2xx acks.",
)
@click.option(
    "--redis",
    "redis_url",
    default=None,
    metavar="URL",
    help="Keep Redis keys (--key) consistent: DEL on every change (redis://...).",
)
@click.option(
    "--key",
    "key_template",
    default=None,
    metavar="TEMPLATE",
    help="With --redis: the key of a row, from its columns, e.g. 'doc:{id}'.",
)
@click.option(
    "--refresh",
    is_flag=True,
    help="With --redis: SET the key to the row's JSON instead of deleting it.",
)
@click.option(
    "--ttl",
    default=None,
    metavar="DURATION",
    help="With --refresh: the keys expire after this long (e.g. 1h).",
)
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1))
@click.option(
    "--max-attempts",
    default=8,
    show_default=True,
    type=click.IntRange(1),
    help="Deliveries of a batch before its changes become dead letters.",
)
@click.option(
    "--timeout",
    default="60s",
    show_default=True,
    help="Longest a command may run (or a request take) per batch.",
)
@click.option(
    "--partitions",
    default=16,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Fixed when the group is created: workers share at most this many ways.",
)
@click.option(
    "--start",
    type=click.Choice(["now", "beginning"]),
    default="now",
    show_default=True,
    help="Where a new group starts reading.",
)
@click.option(
    "--max-lag",
    default="7d",
    show_default=True,
    help="Pruning keeps unacknowledged changes this long, then resets the group.",
)
@click.option("-v", "--verbose", is_flag=True)
@database_option
@async_command
async def consume(
    group: str,
    tables: tuple[str, ...],
    filter_text: str,
    command: str | None,
    webhook: str | None,
    redis_url: str | None,
    key_template: str | None,
    refresh: bool,
    ttl: str | None,
    batch_size: int,
    max_attempts: int,
    timeout: str,
    partitions: int,
    start: str,
    max_lag: str,
    verbose: bool,
    database_url: str | None,
) -> None:
    """Deliver the changes of the --table tables to a command, a webhook or
    Redis keys, as consumer group GROUP: nothing lost while the sink or this
    process is down; run it several times to share the work."""
    sinks = [x for x in (command, webhook, redis_url) if x is not None]
    if len(sinks) != 1:
        raise click.UsageError(
            "give exactly one of --exec CMD, --webhook URL or --redis URL"
        )
    if redis_url is None and (key_template or refresh or ttl):
        raise click.UsageError("--key, --refresh and --ttl go with --redis URL")
    setup_logging(verbose)
    seconds = parse_duration(timeout)
    if seconds <= 0:
        raise click.BadParameter("--timeout must be more than 0")
    redis_client = None
    templates: dict[str, KeyTemplate] | None = None
    expire: float | None = None
    if redis_url is not None:
        if not key_template:
            raise click.UsageError("--redis needs --key TEMPLATE, e.g. 'doc:{id}'")
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise click.BadParameter(
                f"--redis {redis_url!r} is not a redis://, rediss:// or unix:// URL"
            )
        if ttl is not None:
            if not refresh:
                raise click.UsageError("--ttl goes with --refresh (deleted keys)")
            expire = parse_duration(ttl)
            if expire <= 0:
                raise click.BadParameter("--ttl must be more than 0")
        KeyTemplate.parse(key_template)  # refuse a bad template before connecting
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise click.UsageError(
                "--redis needs the redis package: pip install 'pgpulse[redis]'"
            ) from None
        redis_client = aioredis.from_url(
            redis_url, socket_timeout=seconds, socket_connect_timeout=seconds
        )
        deliver = None
        target = f"Redis keys {key_template!r} at {redis_url}"
    elif command is not None:
        argv = shlex.split(command)
        if not argv:
            raise click.BadParameter("--exec needs a command")
        deliver = exec_sink(argv, timeout=seconds)
        target = f"command {argv[0]!r}"
    else:
        assert webhook is not None
        if not webhook.startswith(("http://", "https://")):
            raise click.BadParameter(f"--webhook {webhook!r} is not an http(s) URL")
        secret = os.environ.get("PGPULSE_WEBHOOK_SECRET", "")
        if not secret:
            raise click.UsageError(
                "set PGPULSE_WEBHOOK_SECRET: webhooks are signed with it "
                "(receivers check the Pgpulse-Signature header)"
            )
        deliver = webhook_sink(webhook, secret, timeout=seconds)
        target = f"webhook {webhook}"
    lag = parse_duration(max_lag)

    def check(worker: Consumer) -> None:
        nonlocal templates
        if key_template is not None:
            templates = key_templates(worker, key_template)

    worker = Consumer(
        resolve_database(database_url),
        group,
        tables,
        filter_text,
        partitions=partitions,
        batch_size=batch_size,
        start=start,
        max_lag=dt.timedelta(seconds=lag) if lag > 0 else None,
        check=check,
    )
    async with worker:
        if redis_client is not None:
            assert templates is not None
            deliver = redis_sink(redis_client, templates, refresh=refresh, ttl=expire)
        assert deliver is not None
        console.print(
            f"consuming {', '.join(worker.tables)} as group {group!r} "
            f"(worker {worker.worker}) into {target}"
        )
        last = [0.0]

        def progress(stats: SinkStats) -> None:
            # One line at most every few seconds: a log, not a flood.
            now = time.monotonic()
            if now - last[0] >= 5 or stats.dead_letters:
                last[0] = now
                console.print(
                    f"group {group}: {stats.changes} changes delivered in "
                    f"{stats.batches} batches, {stats.failures} failed attempts, "
                    f"{stats.dead_letters} dead letters"
                )

        try:
            await run_sink(
                worker,
                deliver,
                # Redis failing is an outage, not a bad change: retry forever.
                max_attempts=None if redis_client is not None else max_attempts,
                on_progress=progress,
            )
        finally:
            if redis_client is not None:
                await redis_client.aclose()


@click.group(invoke_without_command=True)
@database_option
@click.pass_context
def consumers(ctx: click.Context, database_url: str | None) -> None:
    """Consumer groups: lag, throughput, dead letters (and retry, drop)."""
    ctx.ensure_object(dict)
    ctx.obj["database_url"] = database_url
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_groups)


def _dsn(ctx: click.Context, database_url: str | None) -> str:
    return resolve_database(database_url or ctx.obj.get("database_url"), quiet=True)


@consumers.command("list")
@database_option
@click.pass_context
@async_command
async def list_groups(ctx: click.Context, database_url: str | None = None) -> None:
    """Every group with its workers, lag and dead letters."""
    conn = await asyncpg.connect(_dsn(ctx, database_url))
    try:
        groups = await group_stats(conn)
    finally:
        await conn.close()
    if not groups:
        console.print("no consumer groups yet (start one: pgpulse consume GROUP ...)")
        return
    table = Table(box=None, pad_edge=False)
    for column in (
        "group",
        "tables",
        "filter",
        "workers",
        "delivered",
        "redelivered",
        "lag",
        "lag age",
        "dead letters",
        "resets",
    ):
        table.add_column(column)
    for g in groups:
        table.add_row(
            g.name,
            ", ".join(g.tables),
            g.filter or "-",
            str(g.workers),
            str(g.delivered),
            str(g.redelivered),
            str(g.lag_changes),
            f"{g.lag_seconds:.1f}s",
            str(g.dead_letters)
            + (f" ({g.retry_pending} retrying)" if g.retry_pending else ""),
            str(g.resets),
        )
    out.print(table)


@consumers.command("dead")
@click.argument("group")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1))
@database_option
@click.pass_context
@async_command
async def dead(
    ctx: click.Context, group: str, limit: int, database_url: str | None = None
) -> None:
    """The dead letters of GROUP: which change, why, how many attempts."""
    conn = await asyncpg.connect(_dsn(ctx, database_url))
    try:
        letters = await list_dead_letters(conn, group, limit)
    finally:
        await conn.close()
    if not letters:
        console.print(f"group {group!r} has no dead letters")
        return
    for d in letters:
        retry = " (retry requested)" if d.retry_requested else ""
        out.print(
            f"{d.id}\tchange {d.change_id}\t{d.table}\t{d.op}\t{d.attempts} attempts"
            f"\t{d.failed_at.isoformat()}\t{d.error}{retry}"
        )


@consumers.command("retry")
@click.argument("group")
@database_option
@click.pass_context
@async_command
async def retry(
    ctx: click.Context, group: str, database_url: str | None = None
) -> None:
    """Deliver GROUP's dead letters again (its running workers pick them up)."""
    conn = await asyncpg.connect(_dsn(ctx, database_url))
    try:
        if not await _exists(conn, group):
            raise click.ClickException(f"no consumer group {group!r}")
        count = await request_retry(conn, group)
    finally:
        await conn.close()
    console.print(f"{count} dead letters of group {group!r} will be delivered again")


@consumers.command("drop")
@click.argument("group")
@click.option("--yes", is_flag=True, help="Do not ask (required without a terminal).")
@database_option
@click.pass_context
@async_command
async def drop(
    ctx: click.Context, group: str, yes: bool, database_url: str | None = None
) -> None:
    """Delete GROUP, its positions and dead letters (pruning no longer waits
    for it)."""
    if not yes:
        raise click.UsageError(
            f"dropping group {group!r} loses its position; add --yes"
        )
    conn = await asyncpg.connect(_dsn(ctx, database_url))
    try:
        done = await conn.execute(
            "delete from pgpulse.consumer_groups where name = $1", group
        )
    finally:
        await conn.close()
    if done.endswith(" 0"):
        raise click.ClickException(f"no consumer group {group!r}")
    console.print(f"dropped consumer group {group!r}")


async def _exists(conn: asyncpg.Connection, group: str) -> bool:
    return bool(
        await conn.fetchval(
            "select exists (select from pgpulse.consumer_groups where name = $1)",
            group,
        )
    )
