"""Capped exponential back-off with jitter: how every reconnect in pgpulse waits.

Why one helper: the listener, the wal decoder, the Python client, the
in-process consumer and ``serve`` waiting for its database all retry; with one
rule they cannot drift apart (client.js keeps its own copy, in JavaScript).
Jitter spreads reconnects of many clients after a restart.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays ``initial * factor**attempt``, capped at ``maximum``, each
    scaled by a random factor in [1 - jitter, 1]."""

    initial: float = 0.1
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5
    attempt: int = 0

    def next(self) -> float:
        """The delay before the next attempt (and count this one)."""
        base = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return base * (1 - self.jitter * random.random())

    async def wait(self) -> float:
        """Sleep :meth:`next`; returns the delay slept."""
        delay = self.next()
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        """A success: the next failure waits ``initial`` again."""
        self.attempt = 0
