"""Gateway settings, from CLI flags or ``PGPULSE_*`` environment variables.

Why a dataclass that round-trips through JSON: ``serve --workers N`` starts N
processes, and each rebuilds the same settings from ``PGPULSE_SETTINGS``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Settings"]


@dataclass
class Settings:
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    rest_enabled: bool = False
    """Serve ``/v1/rest/{table}`` reads (on by default once auth is configured)."""
    rest_schemas: list[str] = field(default_factory=lambda: ["public"])
    """Schemas REST exposes (their watched tables, published columns)."""
    rest_tables: list[str] = field(default_factory=list)
    """Tables opened for REST though not watched (all their columns)."""
    cors_origins: list[str] = field(default_factory=list)
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
    application_name: str = "pgpulse"
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
        url = os.environ.get("DATABASE_URL")
        if not url:
            raise RuntimeError("set DATABASE_URL or PGPULSE_SETTINGS")
        return cls(
            database_url=url,
            rest_enabled=os.environ.get("PGPULSE_REST", "") in ("1", "true", "yes"),
        )
