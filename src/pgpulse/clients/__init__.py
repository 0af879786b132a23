"""Python clients of the stream: over HTTP from a gateway, or in-process from
the database."""

from __future__ import annotations

from pgpulse.clients.live import live_query
from pgpulse.clients.stream import Client, Event, changes

__all__ = ["Client", "Event", "changes", "live_query"]
