"""Gateway settings: every one settable per key, from the command line, the
environment or a file.

Precedence: ``pgpulse serve`` flags, then ``PGPULSE_<NAME>`` environment
variables (``PGPULSE_PORT=9000``; ``DATABASE_URL`` too), then ``[serve]`` in
``pgpulse.toml`` (``[tool.pgpulse.serve]`` in ``pyproject.toml``), then the
defaults below.  A value of the wrong type is refused with a message naming
the key and what it expects.  docs/configuration.md lists every key (a test
keeps it in step with this class).

Why a dataclass that round-trips through JSON: ``serve --workers N`` starts N
processes, and each rebuilds the same settings from ``PGPULSE_SETTINGS``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgpulse.exceptions import ConfigurationError

__all__ = ["Settings", "describe", "env_name", "load_settings"]


@dataclass
class Settings:
    database_url: str
    """PostgreSQL URL (also ``DATABASE_URL``)."""
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8000
    """TCP port to listen on (1-65535)."""
    workers: int = 1
    """Gateway processes, each with its own listener connection."""
    rest_enabled: bool = False
    """Serve ``/v1/rest/{table}`` reads (on by default once auth is configured)."""
    rest_writes: bool = False
    """Accept POST/PATCH/PUT/DELETE on ``/v1/rest/{table}`` with auth off (with
    auth on, each policy's ``write`` setting decides)."""
    rest_schemas: list[str] = field(default_factory=lambda: ["public"])
    """Schemas REST exposes (their watched tables, published columns)."""
    rest_tables: list[str] = field(default_factory=list)
    """Tables opened for REST though not watched (all their columns)."""
    rest_functions: list[str] = field(default_factory=list)
    """Functions callable at ``/v1/rest/rpc/NAME`` (none unless listed)."""
    cors_origins: list[str] = field(default_factory=list)
    """Browser origins allowed to use the gateway (CORS, WebSocket)."""
    heartbeat: float = 15.0
    """Seconds between SSE heartbeat comments."""
    retry_ms: int = 2000
    """Reconnect delay suggested to EventSource clients."""
    outbox_limit: int = 16 * 1024 * 1024
    """Bytes of events a client may fall behind before it is disconnected.

    Event bytes are shared between clients, so a burst every client receives
    costs its size once, not once per client; what this bounds is how much a
    lagging client can keep alive on its own."""
    keepalive: float = 5.0
    """Seconds between listener keepalive reads when idle."""
    query_timeout: float = 10.0
    """A listener read slower than this means a dead connection: reconnect."""
    listener_url: str | None = None
    """A direct connection for the listener (and the wal decoder) when
    ``database_url`` goes through a pooler in transaction mode (env
    PGPULSE_LISTENER_URL)."""
    broker: list[str] = field(default_factory=list)
    """NATS servers (``nats://host:4222``) of a JetStream stream that
    ``pgpulse relay`` fills: changes come from there, and this gateway opens
    no listener connection of its own (``serve --broker``)."""
    pool_size: int = 2
    """Connections for catch-up reads and REST (the listener has its own)."""
    retention_seconds: float | None = 7 * 24 * 3600.0
    """Prune changes older than this (None: never by age)."""
    retention_rows: int | None = None
    """Keep at most this many changes (None: no row limit)."""
    prune_interval: float = 60.0
    """Seconds between automatic prunes (one process at a time prunes)."""
    decode_wal: bool = True
    """Decode tables watched with source 'wal' (one process at a time does)."""
    demo: bool = False
    """Serve the demo page at ``/``."""
    application_name: str = "pgpulse"
    """``application_name`` of the gateway's connections."""
    max_subscriptions: int = 100
    """Subscriptions per connection (SSE ``sub=`` values, WebSocket subscribes)."""
    max_url_bytes: int = 8192
    """Longest request target (path and query) accepted; longer is a 414."""
    max_header_bytes: int = 16384
    """Largest total of request headers accepted; larger is a 431."""
    max_cursor_bytes: int = 8192
    """Longest ``Last-Event-ID`` accepted."""
    max_ws_message_bytes: int = 65536
    """Largest WebSocket message from a client; larger closes with 1009."""
    max_connections_per_user: int | None = None
    """Open streams per user (the token's ``sub``); more is a 429."""
    config_file: str | None = None
    """``pgpulse.toml`` (``[auth]``, ``[policies]``); None: look in the working
    directory."""
    metrics_token: str | None = field(
        default_factory=lambda: os.environ.get("PGPULSE_METRICS_TOKEN") or None
    )
    """Bearer token for /metrics once auth is on (env PGPULSE_METRICS_TOKEN)."""

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> Settings:
        raw = os.environ.get("PGPULSE_SETTINGS")
        if raw:
            data: dict[str, Any] = json.loads(raw)
            return cls(**data)
        return load_settings()


#: Settings read from the environment under another name as well.
ALIASES = {
    "database_url": ("DATABASE_URL",),
    "rest_enabled": ("PGPULSE_REST",),
}
#: Settings that only the command line sets.
_NOT_CONFIGURABLE = {"config_file"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_name(key: str) -> str:
    return f"PGPULSE_{key.upper()}"


def _fields() -> dict[str, str]:
    return {
        f.name: str(f.type)
        for f in dataclasses.fields(Settings)
        if f.name not in _NOT_CONFIGURABLE
    }


def _convert(key: str, kind: str, value: Any, where: str) -> Any:
    """*value* (text from the environment, or a TOML value) as *kind*."""
    optional = kind.endswith("| None")
    base = kind.removesuffix("| None").strip()
    text = value.strip() if isinstance(value, str) else None
    if optional and (value is None or text == ""):
        return None

    def wrong(expected: str) -> ConfigurationError:
        return ConfigurationError(
            f"{where}: {key} must be {expected}, got {value!r}"
            + (" (or empty for none)" if optional else "")
        )

    if base == "bool":
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise wrong("true or false")
    if base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text is not None and re.fullmatch(r"-?\d+", text):
            return int(text)
        raise wrong("a whole number")
    if base == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(text) if text is not None else math.nan
            except ValueError:
                raise wrong("a number") from None
        if not math.isfinite(number):
            raise wrong("a finite number")
        return number
    if base == "list[str]":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        if text is not None:
            return [part.strip() for part in text.split(",") if part.strip()]
        raise wrong("a list of strings (comma separated in the environment)")
    if isinstance(value, str):
        return value
    raise wrong("a string")


def _from_file(path: str | None) -> tuple[dict[str, Any], str]:
    candidates = (
        [Path(path)] if path else [Path("pgpulse.toml"), Path("pyproject.toml")]
    )
    for candidate in candidates:
        if not candidate.is_file():
            if path:
                raise ConfigurationError(f"configuration file {path} does not exist")
            continue
        try:
            document = tomllib.loads(candidate.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{candidate}: {exc}") from None
        if candidate.name == "pyproject.toml":
            document = document.get("tool", {}).get("pgpulse", {})
            where = f"{candidate} [tool.pgpulse.serve]"
        else:
            where = f"{candidate} [serve]"
        table = document.get("serve", {})
        if not isinstance(table, dict):
            raise ConfigurationError(f"{where} must be a table of settings")
        return table, where
    return {}, ""


def load_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    path: str | None = None,
) -> Settings:
    """Settings from *cli* (already typed), the environment, the file at
    *path* (default ``pgpulse.toml`` or ``pyproject.toml`` here) and the
    defaults, in that order; raises :class:`ConfigurationError` naming the
    key of a bad value."""
    env = os.environ if env is None else env
    fields = _fields()
    values: dict[str, Any] = {}
    table, where = _from_file(path)
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; the settings are "
            "listed in docs/configuration.md"
        )
    for key, value in table.items():
        values[key] = _convert(key, fields[key], value, where)
    for key, kind in fields.items():
        for name in (env_name(key), *ALIASES.get(key, ())):
            if name in env:
                values[key] = _convert(key, kind, env[name], f"environment {name}")
                break
    values.update({k: v for k, v in (cli or {}).items() if v is not None})
    if not values.get("database_url"):
        raise ConfigurationError(
            "no database: pass --database-url, or set DATABASE_URL "
            "(or PGPULSE_DATABASE_URL, or database_url in [serve])"
        )
    return Settings(**values)


def describe() -> list[tuple[str, str, str, str, str]]:
    """(key, environment variables, type, default, meaning) of every setting,
    from this class's own attribute docstrings (docs/configuration.md)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(Settings)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    rows = []
    defaults = {f.name: f for f in dataclasses.fields(Settings)}
    for key, kind in _fields().items():
        f = defaults[key]
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif key == "metrics_token":
            default = "None"
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        names = ", ".join((env_name(key), *ALIASES.get(key, ())))
        rows.append((key, names, kind, default, docs.get(key, "")))
    return rows
