"""Bounds on what one request may ask of the gateway.

Why: a gateway on the internet meets clients that send 10,000 subscriptions,
megabyte cursors or endless headers, by mistake or on purpose.  Each bound is a
setting (:class:`~pgpulse.config.Settings`) and each refusal is a clear 4xx
naming the bound, before any work is done.
"""

from __future__ import annotations

from starlette.types import Scope

from pgpulse.config import Settings

__all__ = ["oversized"]


def oversized(scope: Scope, settings: Settings) -> tuple[int, str] | None:
    """(status, message) when the request's target or headers are too large."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(
        scope.get("query_string", b"")
    )
    if target > settings.max_url_bytes:
        return (
            414,
            f"the request target is {target} bytes; at most "
            f"{settings.max_url_bytes} are accepted (fewer subscriptions per "
            "stream, or shorter filters)",
        )
    headers = sum(len(k) + len(v) for k, v in scope.get("headers", []))
    if headers > settings.max_header_bytes:
        return (
            431,
            f"the request headers are {headers} bytes; at most "
            f"{settings.max_header_bytes} are accepted",
        )
    return None
