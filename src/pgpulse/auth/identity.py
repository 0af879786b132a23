"""Who is asking: a verified JWT (or an application's own hook) as claims.

Why this shape: browsers reach the gateway with ``EventSource`` (which cannot
set headers), WebSockets and ``fetch``, so a token may come in the
``Authorization: Bearer`` header, the ``access_token`` query parameter or a
cookie.  Verification is PyJWT's, with the algorithms pinned to the kind of
key configured: a shared secret allows only HMAC, a public key only its own
family, so ``alg=none`` and algorithm confusion (an RS256 public key used as
an HS256 secret) are refused.  ``exp``, ``nbf``, ``aud`` and ``iss`` are
checked.  Applications with their own sessions pass ``authenticate``, an async
callable that turns a request into :class:`Claims` (or None).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from starlette.requests import HTTPConnection

from pgpulse.exceptions import AuthError

__all__ = [
    "AuthConfig",
    "Authenticate",
    "Claims",
    "identify",
    "token_of",
]

_HMAC = ("HS256", "HS384", "HS512")
_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC = ("ES256", "ES384", "ES512")
_OKP = ("EdDSA",)


@dataclass(frozen=True)
class Claims:
    """A verified identity."""

    values: Mapping[str, Any]
    """The token's claims (or what the application's hook returned)."""
    role: str | None
    """The PostgreSQL role REST reads and row-level security run as."""
    expires_at: float | None = None
    """``exp`` (seconds since the epoch): the stream ends then."""

    @property
    def subject(self) -> str | None:
        sub = self.values.get("sub")
        return None if sub is None else str(sub)


ANONYMOUS = Claims({}, None)

Authenticate = Callable[[HTTPConnection], Awaitable[Claims | None]]


@dataclass(frozen=True)
class AuthConfig:
    """How tokens are verified (``[auth]`` in ``pgpulse.toml``)."""

    secret: str | None = field(default=None, repr=False)
    """HMAC secret (env ``PGPULSE_JWT_SECRET``; never in a committed file)."""
    public_key: str | None = None
    """PEM public key (RSA, EC or Ed25519): the path of a file, or the key."""
    jwks: Mapping[str, Any] | None = None
    """A JWKS document (``{"keys": [...]}``), tokens pick a key by ``kid``."""
    audience: str | None = None
    issuer: str | None = None
    anonymous_role: str | None = None
    """Role for requests without a token; without it they get a 401."""
    role_claim: str = "role"
    cookie: str = "pgpulse_token"
    leeway: float = 0.0

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], env: Mapping[str, str]
    ) -> AuthConfig:
        """Build from an ``[auth]`` table; the secret only from *env*."""
        if "secret" in data or "jwt_secret" in data:
            raise AuthError(
                "the JWT secret does not belong in a configuration file; set "
                "PGPULSE_JWT_SECRET in the environment instead",
                status=500,
            )
        known = {
            "public_key",
            "jwks",
            "jwks_file",
            "audience",
            "issuer",
            "anonymous_role",
            "role_claim",
            "cookie",
            "leeway",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise AuthError(
                f"unknown [auth] setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}",
                status=500,
            )
        public_key = data.get("public_key")
        if isinstance(public_key, str) and "BEGIN" not in public_key:
            public_key = Path(public_key).read_text()
        jwks = data.get("jwks")
        if data.get("jwks_file"):
            jwks = json.loads(Path(str(data["jwks_file"])).read_text())
        config = cls(
            secret=env.get("PGPULSE_JWT_SECRET") or None,
            public_key=public_key,
            jwks=jwks,
            audience=data.get("audience"),
            issuer=data.get("issuer"),
            anonymous_role=data.get("anonymous_role"),
            role_claim=str(data.get("role_claim", "role")),
            cookie=str(data.get("cookie", "pgpulse_token")),
            leeway=float(data.get("leeway", 0.0)),
        )
        config.check()
        return config

    def check(self) -> None:
        keys = [k for k in (self.secret, self.public_key, self.jwks) if k]
        if len(keys) != 1:
            raise AuthError(
                "auth needs exactly one way to verify tokens: PGPULSE_JWT_SECRET "
                "(HS256), [auth] public_key (RS256/ES256/EdDSA) or [auth] jwks_file",
                status=500,
            )

    def verify(self, token: str) -> Claims:
        """The claims of a valid *token*; raises :class:`AuthError` (401)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"the token is not a JWT ({exc})") from None
        key, algorithms = self._key_for(header)
        alg = header.get("alg")
        if alg not in algorithms:
            raise AuthError(
                f"token algorithm {alg!r} is not accepted here "
                f"(accepted: {', '.join(algorithms)})"
            )
        options: dict[str, Any] = {
            "require": ["exp"],
            "verify_aud": bool(self.audience),
        }
        try:
            values = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired; get a new one") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("the token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise AuthError(
                f"the token is not for this audience ({self.audience!r})"
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthError(
                f"the token is not from the expected issuer ({self.issuer!r})"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token has no {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"the token is invalid ({exc})") from None
        role = values.get(self.role_claim)
        if role is not None and not isinstance(role, str):
            raise AuthError(f"the token's {self.role_claim!r} claim must be a string")
        return Claims(values, role or self.anonymous_role, float(values["exp"]))

    def _key_for(self, header: Mapping[str, Any]) -> tuple[Any, tuple[str, ...]]:
        if self.secret:
            return self.secret, _HMAC
        if self.public_key:
            return _family(self.public_key)
        assert self.jwks is not None
        kid = header.get("kid")
        try:
            keys = jwt.PyJWKSet.from_dict(dict(self.jwks)).keys
        except jwt.PyJWTError as exc:
            raise AuthError(
                f"the configured JWKS is unusable ({exc})", status=500
            ) from None
        for jwk in keys:
            if kid is None or jwk.key_id == kid:
                algorithm = jwk.algorithm_name
                return jwk.key, (algorithm,) if algorithm else _RSA + _EC + _OKP
        raise AuthError(f"no key {kid!r} in the configured JWKS")


def _family(pem: str) -> tuple[Any, tuple[str, ...]]:
    """A public key and the only algorithms that may use it."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem.encode())
    if isinstance(key, rsa.RSAPublicKey):
        return key, _RSA
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, _EC
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, _OKP
    raise AuthError("the configured public key is not RSA, EC or Ed25519", status=500)


def token_of(connection: HTTPConnection, cookie: str) -> str | None:
    """The bearer token of a request: header, ``access_token``, or cookie."""
    header = connection.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError("send the token as 'Authorization: Bearer <token>'")
        return value.strip()
    query = connection.query_params.get("access_token")
    if query:
        return query
    return connection.cookies.get(cookie) or None


async def identify(
    connection: HTTPConnection,
    config: AuthConfig | None,
    hook: Authenticate | None = None,
) -> Claims:
    """Who sent *connection*; raises :class:`AuthError` (401) when nobody may.

    Without ``config`` and ``hook`` auth is off: everyone is anonymous.
    """
    if hook is not None:
        claims = await hook(connection)
        if claims is not None:
            return claims
    if config is None:
        if hook is not None:
            raise AuthError("not signed in")
        return ANONYMOUS
    token = token_of(connection, config.cookie)
    if token is None:
        if config.anonymous_role is not None:
            return Claims({}, config.anonymous_role)
        raise AuthError(
            "this gateway needs a token: 'Authorization: Bearer <jwt>', or "
            "?access_token=<jwt> for EventSource"
        )
    claims = config.verify(token)
    if (
        claims.expires_at is not None
        and claims.expires_at <= time.time() - config.leeway
    ):
        raise AuthError("the token has expired; get a new one")
    return claims
