"""The ``pgpulse`` command line.

Every command that needs a database takes ``--database-url`` (or
``DATABASE_URL``); without one, it uses an embedded PostgreSQL, so
``pgpulse demo`` works on a fresh machine.
"""

from __future__ import annotations

import click

from pgpulse import __version__
from pgpulse.cli.capture import unwatch, watch, watched
from pgpulse.cli.consume import consume, consumers
from pgpulse.cli.demo import demo
from pgpulse.cli.prune import prune
from pgpulse.cli.relay import relay
from pgpulse.cli.serve import serve
from pgpulse.cli.setup import setup_command
from pgpulse.cli.tail import tail

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pgpulse")
def main() -> None:
    """pgpulse: committed PostgreSQL changes to browsers, live, nothing lost.

    \b
    Quick start:
      pgpulse demo                 live demo page on an embedded PostgreSQL
      pgpulse watch documents      capture changes of a table
      pgpulse serve                gateway: SSE /v1/events, WebSocket /v1/ws
      pgpulse tail documents       print live changes in the terminal
      pgpulse consume mailer --table orders --exec ./send.sh
                                   a worker group: nothing lost while down
    """


for command in (
    serve,
    watch,
    unwatch,
    watched,
    tail,
    prune,
    demo,
    setup_command,
    consume,
    consumers,
    relay,
):
    main.add_command(command)

try:
    from pgpulse.cli.budget import budget
    from pgpulse.cli.migrate import migrate
except ImportError:  # pragma: no cover - shipped together; tolerated mid-upgrade
    pass
else:
    main.add_command(migrate)
    main.add_command(budget)
