"""The demo's two users: a user-specific channel, shown live.

Why it is part of the demo: one user's notifications are the most common thing
people build on a real-time database, and the policy that keeps each user's
own (``recipient=eq.{claims.sub}``) is the pattern docs/security.md teaches.
The demo signs its tokens with a secret made at start and kept in memory, so
nothing can be committed or reused; visitors without a token read shipments
and documents as ``visitor`` (the ``anonymous_role``), never notifications.
"""

from __future__ import annotations

import secrets
import time

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pgpulse.auth.config import AuthSettings
from pgpulse.auth.identity import AuthConfig
from pgpulse.auth.policies import Policies

__all__ = ["USERS", "DemoAuth"]

USERS = ("ann", "bob")
"""The demo's users (``notifications.recipient`` holds one of them)."""

TOKEN_LIFETIME = 600.0
"""Seconds a demo token lives; client.js asks for a new one when it expires."""


class DemoAuth:
    """The demo's auth settings and the endpoint that signs in a demo user."""

    def __init__(self) -> None:
        self._secret = secrets.token_urlsafe(32)
        self.settings = AuthSettings(
            AuthConfig(secret=self._secret, anonymous_role="visitor"),
            Policies.from_mapping(
                {
                    "shipments": {"roles": ["visitor", "user"]},
                    "documents": {"roles": ["visitor", "user"]},
                    "notifications": {
                        "roles": ["user"],
                        "filter": "recipient=eq.{claims.sub}",
                    },
                }
            ),
        )

    def token(self, user: str, lifetime: float = TOKEN_LIFETIME) -> str:
        """A signed token for demo *user*."""
        now = int(time.time())
        claims = {"sub": user, "role": "user", "iat": now, "exp": now + int(lifetime)}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    async def endpoint(self, request: Request) -> Response:
        """``GET /demo/token?user=ann``: sign in as a demo user."""
        user = request.query_params.get("user", "")
        if user not in USERS:
            return JSONResponse(
                {"error": f"unknown demo user {user!r}; use one of {', '.join(USERS)}"},
                status_code=400,
            )
        return JSONResponse(
            {"user": user, "token": self.token(user)},
            headers={"cache-control": "no-store"},
        )
