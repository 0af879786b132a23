"""What auth bounds about open streams: how many per user, and until when.

Why here: SSE, WebSocket and live queries all admit a caller's stream the
same way (``max_connections_per_user``, a 429 past it) and end it the same
way when the caller's token expires (``auth_expired``: the client gets a new
token and resumes from its last event id).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pgpulse.auth.access import Access
from pgpulse.exceptions import AuthError
from pgpulse.routing.outbox import Outbox

__all__ = ["AUTH_EXPIRED", "StreamQuota", "expire_at"]

#: Reason prefix of a stream ended because the client's token expired.
AUTH_EXPIRED = "auth_expired"


def _nothing() -> None:
    pass


def expire_at(outbox: Outbox, when: float | None) -> asyncio.TimerHandle | None:
    """Close *outbox* with ``auth_expired`` at *when* (epoch seconds; None:
    never).  Cancel the handle when the stream ends first."""
    if when is None:
        return None

    def expire() -> None:
        outbox.close(f"{AUTH_EXPIRED}: the token expired; resume with a new one")

    delay = max(0.0, when - time.time())
    return asyncio.get_running_loop().call_later(delay, expire)


class StreamQuota:
    """Open streams per user (the token's ``sub``), at most *limit* each."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def admit(self, access: Access) -> Callable[[], None]:
        """Count one more open stream for the caller; raises
        :class:`AuthError` (429) past the limit.  Returns the release."""
        user = access.claims.subject
        limit = self.limit
        if user is None or limit is None:
            return _nothing
        if self._open.get(user, 0) >= limit:
            raise AuthError(
                f"user {user!r} already has {limit} open streams, the most "
                "allowed; close one first",
                status=429,
            )
        self._open[user] = self._open.get(user, 0) + 1

        def release() -> None:
            left = self._open.get(user, 1) - 1
            if left > 0:
                self._open[user] = left
            else:
                self._open.pop(user, None)

        return release
