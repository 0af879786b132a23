"""``pgpulse serve``: the gateway."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from typing import Any

import click
from click.core import ParameterSource

from pgpulse.auth.config import load_auth
from pgpulse.cli._common import (
    console,
    database_option,
    resolve_database,
    run,
    setup_logging,
)
from pgpulse.cli.preflight import preflight
from pgpulse.config import Settings, load_settings
from pgpulse.exceptions import ConfigurationError, PgPulseError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: A century: anything longer is a typo (and would overflow a timedelta).
MAX_DURATION = 36500 * 86400.0


def parse_duration(text: str) -> float:
    """``30s``, ``15m``, ``12h``, ``7d`` (or plain seconds) → seconds.

    Negative, NaN, infinite and absurd values are refused with a clear
    message (a click usage error, never a traceback); zero is allowed and
    its meaning is the option's (``--retention 0``: never prune;
    ``prune --older-than 0``: everything captured before now).
    """
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise click.BadParameter(
            f"{text!r} is not a duration; use a positive number with s, m, h or d "
            "(e.g. 90s, 15m, 12h, 7d)"
        )
    seconds = float(match[1]) * _UNITS[match[2]]
    if seconds > MAX_DURATION:
        raise click.BadParameter(
            f"{text!r} is more than a century; use e.g. 7d or 365d"
        )
    return seconds


def gateway_options(func: click.decorators.FC) -> click.decorators.FC:
    options = [
        click.option("--host", default="127.0.0.1", show_default=True),
        click.option(
            "--port",
            default=8000,
            show_default=True,
            type=click.IntRange(1, 65535),
            help="TCP port (1-65535); it is bound before the gateway says it is ready.",
        ),
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
            "--rest-writes/--no-rest-writes",
            default=None,
            help="Accept REST writes (POST/PATCH/PUT/DELETE) with auth off (env "
            "PGPULSE_REST_WRITES=1). With auth on, policies' 'write' decide.",
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
            "--broker",
            multiple=True,
            metavar="URL",
            help="Follow the JetStream stream `pgpulse relay` fills on this NATS "
            "server (nats://HOST:4222; repeat for a cluster) instead of the "
            "database: no listener connection here (pip install 'pgpulse[broker]').",
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
            "--rest-function",
            "rest_functions",
            multiple=True,
            metavar="FUNCTION",
            help="Allow calling this function at /v1/rest/rpc/FUNCTION (repeat; "
            "none by default). With auth on it runs as the caller's role.",
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
            help="Prune changes older than this (e.g. 7d; 0 = never prune).",
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


def cli_overrides(given: dict[str, Any]) -> dict[str, Any]:
    """The settings the command-line options in *given* set (only those the
    user passed: the environment and pgpulse.toml fill in the rest)."""
    out: dict[str, Any] = {}
    renames = {
        "rest": "rest_enabled",
        "keep_rows": "retention_rows",
        "prune_every": "prune_interval",
    }
    for name, value in given.items():
        if name == "retention":
            seconds = parse_duration(value)
            out["retention_seconds"] = seconds or None
        elif name == "keep_rows" and value is not None and value < 0:
            raise click.BadParameter("--keep-rows must be >= 0")
        elif name in (
            "cors_origins",
            "rest_tables",
            "rest_schemas",
            "rest_functions",
            "broker",
        ):
            if value:
                out[name] = list(value)
        else:
            out[renames.get(name, name)] = value
    return out


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or a clear error naming the address (before
    anything says "ready")."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {reason}. Pick another --port, or "
            "stop whatever uses it."
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_gateway(settings: Settings, workers: int = 1) -> None:
    """Serve until interrupted (several processes with *workers* > 1)."""
    import uvicorn

    sock = bind(settings.host, settings.port)
    console.print(
        f"[bold green]pgpulse[/] gateway on http://{settings.host}:{settings.port} "
        f"({workers} process{'es' if workers > 1 else ''})"
    )
    if workers > 1:
        os.environ["PGPULSE_SETTINGS"] = settings.to_env()
        from uvicorn.supervisors import Multiprocess

        config = uvicorn.Config(
            "pgpulse.server.app:app_from_env",
            factory=True,
            workers=workers,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        # The workers share the socket bound above (as uvicorn.run would,
        # after binding it itself).
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[sock]).run()
    else:
        from pgpulse.server.app import GatewayServer, create_app

        server = GatewayServer(
            uvicorn.Config(
                create_app(settings), log_level="warning", timeout_graceful_shutdown=2
            )
        )
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it
            server.run(sockets=[sock])


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
    "--wait-for-db",
    default="30s",
    show_default=True,
    metavar="DURATION",
    help="Wait this long for the database to come up at start (0 = not at all).",
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
    wait_for_db: str,
    verbose: bool,
    **options: Any,
) -> None:
    """Run the gateway: SSE at /v1/events, WebSocket at /v1/ws."""
    setup_logging(verbose)
    context = click.get_current_context()
    given = {
        name: value
        for name, value in {**options, "workers": workers}.items()
        if context.get_parameter_source(name) is not ParameterSource.DEFAULT
    }
    overrides = cli_overrides(given)
    if database_url:
        overrides["database_url"] = database_url
    try:
        settings = load_settings(overrides, path=config)
    except ConfigurationError as exc:
        if "no database" not in str(exc):
            raise click.ClickException(str(exc)) from None
        # Nothing anywhere: the embedded PostgreSQL (the zero-setup default).
        overrides["database_url"] = resolve_database(None)
        settings = load_settings(overrides, path=config)
    workers = settings.workers
    settings.config_file = config
    try:
        # A bad policy or a secret in the file stops here, with its message.
        load_auth(config)
    except PgPulseError as exc:
        raise click.ClickException(f"not starting: {exc}") from None
    wait = parse_duration(wait_for_db)
    run(preflight(settings, workers, migrate, migrations_dir, config, wait))
    run_gateway(settings, workers)
