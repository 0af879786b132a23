"""Reading ``[auth]`` and ``[policies]`` from ``pgpulse.toml`` (or
``[tool.pgpulse]`` in ``pyproject.toml``).

Why apart from the gateway's settings: they are nested tables (a policy per
table), and the JWT secret must never be in a file that gets committed, so it
is only read from the environment (``PGPULSE_JWT_SECRET``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgpulse.auth.identity import AuthConfig
from pgpulse.auth.policies import Policies
from pgpulse.exceptions import AuthError, ConfigurationError

__all__ = ["AuthSettings", "load_auth"]


@dataclass(frozen=True)
class AuthSettings:
    """Auth as configured: off when both are None."""

    auth: AuthConfig | None = None
    policies: Policies | None = None

    @property
    def enabled(self) -> bool:
        return self.auth is not None or self.policies is not None


def _document(path: Path) -> Mapping[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from None
    if path.name == "pyproject.toml":
        return dict(data.get("tool", {}).get("pgpulse", {}))
    return data


def load_auth(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> AuthSettings:
    """Auth settings from *path* (default: ``pgpulse.toml``, else
    ``pyproject.toml``'s ``[tool.pgpulse]``, in the working directory).

    A file with ``[policies]`` but no ``[auth]`` (nor PGPULSE_JWT_SECRET) is
    refused: policies without identities would let everyone be anybody.
    """
    env = os.environ if env is None else env
    if path is None:
        for name in ("pgpulse.toml", "pyproject.toml"):
            if Path(name).is_file():
                path = name
                break
    document: Mapping[str, Any] = {} if path is None else _document(Path(path))
    auth_table = document.get("auth")
    policy_table = document.get("policies")
    if auth_table is None and policy_table is None:
        if env.get("PGPULSE_JWT_SECRET"):
            raise ConfigurationError(
                "PGPULSE_JWT_SECRET is set but no [policies] are configured; with "
                "auth on every table needs a policy (see docs/security.md)"
            )
        return AuthSettings()
    try:
        auth = AuthConfig.from_mapping(dict(auth_table or {}), env)
    except AuthError as exc:
        raise ConfigurationError(str(exc)) from None
    if not isinstance(policy_table or {}, Mapping):
        raise ConfigurationError("[policies] must be a table of [policies.TABLE]")
    return AuthSettings(auth, Policies.from_mapping(dict(policy_table or {})))
