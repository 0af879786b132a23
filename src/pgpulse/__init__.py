"""pgpulse: make any PostgreSQL database real-time."""

from __future__ import annotations

__version__ = "0.1.0"
