"""``pgpulse tail``: live changes in the terminal."""

from __future__ import annotations

import asyncio

import click
import orjson

from pgpulse.cli._common import (
    console,
    database_option,
    out,
    resolve_database,
    run,
)
from pgpulse.config import Settings
from pgpulse.gateway import Gateway
from pgpulse.routing.bus import Subscriber
from pgpulse.routing.outbox import Outbox

COLORS = {"INSERT": "green", "UPDATE": "yellow", "DELETE": "red", "TRUNCATE": "magenta"}


@click.command()
@click.argument("tables", nargs=-1)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="COL=OP.VALUE",
    help="Only rows matching (e.g. shipment_id=eq.42); repeat to AND.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@database_option
def tail(
    tables: tuple[str, ...],
    filters: tuple[str, ...],
    as_json: bool,
    database_url: str | None,
) -> None:
    """Print live changes of TABLES (default: every watched table)."""
    run(_tail(resolve_database(database_url, quiet=as_json), tables, filters, as_json))


async def _tail(
    dsn: str, tables: tuple[str, ...], filters: tuple[str, ...], as_json: bool
) -> None:
    settings = Settings(
        database_url=dsn,
        retention_seconds=None,
        pool_size=1,
        application_name="pgpulse-tail",
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        names = list(tables) or sorted(gateway.watched)
        if not names:
            raise click.ClickException(
                "no tables are watched; run `pgpulse watch TABLE`"
            )
        suffix = (":" + ";".join(filters)) if filters else ""
        specs = await gateway.parse_subscriptions(n + suffix for n in names)
        outbox = Outbox(limit=64 * 1024 * 1024)
        subscriber = Subscriber("ws", outbox, "tail")
        await gateway.attach(subscriber, specs, None)
        console.print(f"[dim]tailing {', '.join(names)}{suffix} (Ctrl-C to stop)[/]")
        while True:
            for chunk in await outbox.get():
                message = orjson.loads(chunk)
                if message.get("type") != "change":
                    continue
                if as_json:
                    print(orjson.dumps(message["data"]).decode(), flush=True)
                    continue
                data = message["data"]
                color = COLORS.get(data["op"], "white")
                row = data["row"] if data["row"] is not None else data["old"]
                out.print(
                    f"[{color}]{data['op']:<8}[/] [bold]{data['table']}[/] "
                    f"{orjson.dumps(data['pk']).decode()} "
                    f"[dim]{orjson.dumps(row).decode() if row else ''}[/]"
                )
            if outbox.closed:
                raise click.ClickException(outbox.closed)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        await gateway.stop()
