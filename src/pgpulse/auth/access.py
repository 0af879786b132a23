"""What one caller may read of one table: the rules every read path applies.

Why one place: a subscription, a resume's catch-up and a REST read must apply
the same policy, or the weakest path leaks.  :meth:`Access.rules` turns a
caller's claims and a table's policy into :class:`TableRules`: filters ANDed to
whatever the caller asks (placeholders bound to claims), the columns they may
read, and, for tables under PostgreSQL's row-level security, the viewer whose
policies the database evaluates.  With auth off every published row and column
is readable, as before, and writable where the gateway accepts REST writes
(``--rest-writes``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pgpulse.auth.identity import ANONYMOUS, Claims
from pgpulse.auth.policies import WRITES, Policies, Policy
from pgpulse.catalog import Table
from pgpulse.exceptions import AuthError, ConfigurationError
from pgpulse.routing.db_filters import Viewer
from pgpulse.routing.filters import Filter, columns_of

__all__ = ["OPEN", "SESSION_CLAIMS", "Access", "TableRules"]


@dataclass(frozen=True)
class TableRules:
    """A caller's rules for one table."""

    filters: tuple[Filter, ...] = ()
    """ANDed to every filter the caller gives."""
    columns: frozenset[str] | None = None
    """The columns the caller may see and filter on (None: all published)."""
    viewer: Viewer | None = None
    """Row-level security: PostgreSQL's policies, for this role and claims."""
    writes: frozenset[str] = frozenset()
    """REST writes allowed (insert, update, delete); see :meth:`Access.rules`."""

    @property
    def key(self) -> str:
        columns = None if self.columns is None else sorted(self.columns)
        return f"{self.filters!r}|{columns!r}|{self.viewer!r}"


@dataclass(frozen=True)
class Access:
    """A caller (their claims) under a set of policies (None: auth is off)."""

    claims: Claims
    policies: Policies | None = None

    @property
    def enabled(self) -> bool:
        return self.policies is not None

    def rules(self, table: Table, display: str) -> TableRules:
        """This caller's rules for *table*; raises :class:`AuthError` (403)
        when no policy lets them read it."""
        if self.policies is None:
            return TableRules(writes=WRITES)
        policy = self.policies.for_table(table.qualified, display)
        if policy is None:
            raise AuthError(
                f"table {display!r} has no policy, so nobody may read it while auth "
                f"is on; add [policies.{display}] to pgpulse.toml",
                status=403,
            )
        if not policy.allows(self.claims):
            raise AuthError(
                f"role {self.claims.role!r} may not read table {display!r}",
                status=403,
            )
        filters = policy.bind(self.claims)
        _check_policy_columns(policy, table, filters)
        allowed = policy.columns_for(self.claims)
        columns = None
        if allowed is not None:
            columns = frozenset(allowed)
            missing = [k for k in table.primary_key if k not in columns]
            if missing:
                raise ConfigurationError(
                    f"[policies.{policy.table}] columns must include the primary "
                    f"key ({', '.join(missing)}): events name their row by it"
                )
        viewer = None
        if policy.rls:
            shared = {
                k: v for k, v in self.claims.values.items() if k not in SESSION_CLAIMS
            }
            viewer = Viewer(self.claims.role, json.dumps(shared, sort_keys=True))
        return TableRules(filters, columns, viewer, policy.writes_for(self.claims))


#: Claims that differ per token, never per row.  Streamed changes are checked
#: with the claims minus these, so every session of one user (and every user
#: whose other claims are equal) shares one check per batch; were they kept,
#: each token would be a group of its own.  Expiry is the gateway's business
#: (the stream ends at ``exp``); REST reads still see the token's claims whole.
SESSION_CLAIMS = frozenset({"exp", "iat", "nbf", "jti", "auth_time"})


def _check_policy_columns(
    policy: Policy, table: Table, filters: tuple[Filter, ...]
) -> None:
    for filt in filters:
        for column in columns_of(filt):
            if column not in table.columns:
                raise ConfigurationError(
                    f"[policies.{policy.table}] filter names column {column!r}, "
                    f"which table {table.qualified!r} does not have"
                )


OPEN = Access(ANONYMOUS, None)
"""Auth off: every published row and column."""
