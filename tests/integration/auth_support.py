"""Tokens, a policy file and a two-tenant schema for the auth tests.

Why here: the attack matrix, the randomized isolation test and the RLS test
start real gateway processes with the same configuration.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import asyncpg
import jwt

from pgpulse import capture

SECRET = "test-secret-that-is-long-enough-for-any-hmac-0123456789abcdefghij"
AUDIENCE = "pgpulse-tests"
ISSUER = "https://issuer.test"

POLICIES = """
[auth]
audience = "pgpulse-tests"
issuer = "https://issuer.test"

[policies.docs]
roles = ["authenticated", "admin"]
filter = "tenant_id=eq.{claims.tenant_id}"
columns = { default = ["id", "tenant_id", "title"], admin = "*" }

[policies.orders]
roles = ["authenticated"]
filter = "customer=eq.{claims.sub}"

[policies.notes]
roles = ["authenticated"]
rls = true
"""


def token(
    claims: dict[str, Any] | None = None,
    *,
    secret: str = SECRET,
    algorithm: str = "HS256",
    expires_in: float = 3600,
    **overrides: Any,
) -> str:
    """A signed token for the test configuration (override anything)."""
    now = time.time()
    body = {
        "aud": AUDIENCE,
        "iss": ISSUER,
        "exp": int(now + expires_in),
        "iat": int(now),
        "role": "authenticated",
        **(claims or {}),
        **overrides,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, secret, algorithm=algorithm)


def unsigned(claims: dict[str, Any]) -> str:
    """An ``alg=none`` token."""
    import base64
    import json

    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    body = {
        "aud": AUDIENCE,
        "iss": ISSUER,
        "exp": int(time.time() + 3600),
        "role": "authenticated",
        **claims,
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}."


def write_config(directory: Path, text: str = POLICIES) -> str:
    path = directory / "pgpulse.toml"
    path.write_text(text)
    return str(path)


async def ensure_roles(conn: asyncpg.Connection) -> None:
    """Cluster-wide roles (shared by the tests' databases)."""
    for role in ("authenticated", "admin", "anon"):
        await conn.execute(
            f"do $$ begin create role {role} nologin; "
            "exception when duplicate_object then null; end $$"
        )


async def two_tenants(conn: asyncpg.Connection) -> None:
    await ensure_roles(conn)
    await conn.execute(
        "create table docs (id int primary key, tenant_id int not null, "
        "title text, secret text)"
    )
    await conn.execute(
        "create table orders (id int primary key, customer text not null, total int)"
    )
    await conn.execute("create table open_data (id int primary key, v int)")
    for table in ("docs", "orders", "open_data"):
        await conn.execute(f"grant select on {table} to authenticated, admin")
        await capture.watch(conn, table)
