"""``pgpulse relay``: publish the change log to NATS JetStream (scale-out)."""

from __future__ import annotations

import click

from pgpulse.cli._common import (
    async_command,
    database_option,
    resolve_database,
    setup_logging,
)
from pgpulse.cli.serve import parse_duration

__all__ = ["relay"]


@click.command()
@click.option(
    "--broker",
    envvar="PGPULSE_BROKER",
    required=True,
    multiple=True,
    metavar="URL",
    help="NATS server with JetStream, e.g. nats://127.0.0.1:4222 (repeat for a "
    "cluster; env PGPULSE_BROKER).",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="Copies of the stream JetStream keeps (3 on a three-node cluster).",
)
@click.option(
    "--max-age",
    default="7d",
    show_default=True,
    help="How long the stream keeps changes (e.g. 24h; 0 = no limit). Clients "
    "further behind catch up from the database's log.",
)
@click.option(
    "--name",
    default="pgpulse-relay",
    show_default=True,
    help="This relay's name in logs and pg_stat_activity (application_name).",
)
@database_option
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@async_command
async def relay(
    broker: tuple[str, ...],
    replicas: int,
    max_age: str,
    name: str,
    database_url: str | None,
    verbose: bool,
) -> None:
    """Read the change log once and publish every change to JetStream.

    Run two or more: one publishes (it holds a lock in PostgreSQL), the others
    stand by and take over within a second or so if it dies, resuming where
    it stopped; no change is lost or published twice.
    """
    try:
        from pgpulse.broker.relay import Relay
    except ImportError:
        raise click.ClickException(
            "the relay needs nats-py: pip install 'pgpulse[broker]'"
        ) from None
    setup_logging(verbose)
    seconds = parse_duration(max_age)
    await Relay(
        resolve_database(database_url),
        list(broker),
        replicas=replicas,
        max_age=seconds or None,
        application_name=name,
    ).run()
