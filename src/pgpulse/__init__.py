"""pgpulse: make any PostgreSQL database real-time.

Capture committed changes with triggers into a durable log, follow it with one
listener connection per process, and deliver to browsers (SSE, WebSocket) and
Python consumers with resume by event id.
"""

from __future__ import annotations

from pgpulse.capture import WatchedTable, install_schema, unwatch, watch, watched
from pgpulse.clients.stream import Client, Event, changes
from pgpulse.config import Settings
from pgpulse.consumers import Batch, Consumer, consumer
from pgpulse.exceptions import (
    ConfigurationError,
    CursorError,
    DatabaseError,
    EmbeddedPostgresError,
    FilterError,
    NoPrimaryKeyError,
    PgPulseError,
    UnknownColumnError,
    UnknownTableError,
    ValidationError,
)
from pgpulse.gateway import Gateway
from pgpulse.log.cursor import Cursor, Snapshot
from pgpulse.query import QueryClient, connect
from pgpulse.server.app import create_app

__version__ = "0.1.0"

#: ``pgpulse.connect(url)``: the query client (:func:`pgpulse.query.connect`).
#: The streaming client is :class:`Client` (``pgpulse.Client(gateway_url)``).

__all__ = [
    "Batch",
    "Client",
    "ConfigurationError",
    "Consumer",
    "Cursor",
    "CursorError",
    "DatabaseError",
    "EmbeddedPostgresError",
    "Event",
    "FilterError",
    "Gateway",
    "NoPrimaryKeyError",
    "PgPulseError",
    "QueryClient",
    "Settings",
    "Snapshot",
    "UnknownColumnError",
    "UnknownTableError",
    "ValidationError",
    "WatchedTable",
    "__version__",
    "changes",
    "connect",
    "consumer",
    "create_app",
    "install_schema",
    "unwatch",
    "watch",
    "watched",
]
