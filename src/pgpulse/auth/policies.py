"""Per-table policies: who may read a table, which rows, which columns.

Configured in ``pgpulse.toml`` (or ``[tool.pgpulse]`` in pyproject.toml)::

    [policies.documents]
    roles = ["authenticated"]                       # who may read at all
    filter = "tenant_id=eq.{claims.tenant_id}"      # ANDed to every request
    columns = ["id", "title", "tenant_id"]  # or {admin = "*", default = [...]}

    [policies.orders]
    filter = "customer_id=eq.{claims.sub}"          # a user-specific channel

    write = ["insert", "update"]   # or true, or {admin = true, default = [...]}

    [policies.notes]
    rls = true                                      # the table's CREATE POLICY rules

Why placeholders are bound in the parsed tree, never in text: a claim is a
value (``{"tenant_id": "1,2) or (1=1"}`` stays one odd tenant id), so no claim
can change the filter's shape.  A missing claim denies (403), it never
widens.  With auth on, a table without a policy is not readable at all, and
a table is writable over REST only by the roles its ``write`` names; the
filter then also decides which rows a write may touch and create.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pgpulse.auth.identity import Claims
from pgpulse.exceptions import AuthError, ConfigurationError, FilterError
from pgpulse.routing.filter_values import to_literal
from pgpulse.routing.filters import (
    And,
    Filter,
    Or,
    parse_filters,
)

__all__ = ["WRITES", "Policies", "Policy"]

_PLACEHOLDER = re.compile(r"\{claims((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\}")
_MARK = "\u241e"
_LIST_PLACEHOLDER = re.compile(
    r"\b(in|cs|cd)\.\{claims((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\}"
)


@dataclass(frozen=True)
class Policy:
    """What one table allows."""

    table: str
    """The table as configured (resolved against the catalog by the caller)."""
    roles: tuple[str, ...] | None = None
    """Roles allowed to read; None: any authenticated caller."""
    filter_text: str = ""
    template: tuple[Filter, ...] = ()
    """The filter, parsed, with placeholders as marks."""
    paths: tuple[tuple[str, ...], ...] = ()
    """The claim path of each mark, by its number."""
    columns: Mapping[str, tuple[str, ...] | None] | None = None
    """Role (or ``default``) → readable columns; None in the map: all."""
    rls: bool = False
    """Rows are decided by the table's own ``CREATE POLICY`` rules."""
    writes: Mapping[str, frozenset[str]] | None = None
    """Role (or ``default``) → the REST writes allowed (insert, update, delete)."""

    def allows(self, claims: Claims) -> bool:
        return self.roles is None or claims.role in self.roles

    def columns_for(self, claims: Claims) -> tuple[str, ...] | None:
        """The columns *claims* may read (None: every published column)."""
        if self.columns is None:
            return None
        if claims.role is not None and claims.role in self.columns:
            return self.columns[claims.role]
        if "default" in self.columns:
            return self.columns["default"]
        return ()

    def writes_for(self, claims: Claims) -> frozenset[str]:
        """The writes *claims* may make (none unless the policy says)."""
        if self.writes is None or not self.allows(claims):
            return frozenset()
        if claims.role is not None and claims.role in self.writes:
            return self.writes[claims.role]
        return self.writes.get("default", frozenset())

    def bind(self, claims: Claims) -> tuple[Filter, ...]:
        """The policy's filter for *claims* (raises :class:`AuthError` 403
        when a claim it needs is missing or of the wrong shape)."""
        return tuple(self._bind(f, claims) for f in self.template)

    def _bind(self, filt: Filter, claims: Claims) -> Filter:
        if isinstance(filt, Or | And):
            return replace(filt, items=tuple(self._bind(i, claims) for i in filt.items))
        value = filt.value
        if isinstance(value, tuple):
            items: list[str] = []
            for item in value:
                number = _mark_number(item)
                if number is None:
                    items.append(item)
                    continue
                claim = self._claim(number, claims)
                if isinstance(claim, list | tuple):
                    items.extend(_literal(v, self, number) for v in claim)
                else:
                    items.append(_literal(claim, self, number))
            return replace(filt, value=tuple(items))
        if isinstance(value, str) and _MARK in value:
            whole = _mark_number(value)
            if whole is not None:
                claim = self._claim(whole, claims)
                if isinstance(claim, list | tuple | dict):
                    raise AuthError(
                        f"the policy of {self.table!r} needs claim "
                        f"{self._name(whole)!r} to be a single value",
                        status=403,
                    )
                return replace(filt, value=_literal(claim, self, whole))

            def put(match: re.Match[str]) -> str:
                number = int(match.group(1))
                return _literal(self._claim(number, claims), self, number)

            return replace(filt, value=re.sub(f"{_MARK}(\\d+){_MARK}", put, value))
        return filt

    def _name(self, number: int) -> str:
        return "claims." + ".".join(self.paths[number])

    def _claim(self, number: int, claims: Claims) -> Any:
        value: Any = claims.values
        for part in self.paths[number]:
            if not isinstance(value, Mapping) or part not in value:
                raise AuthError(
                    f"the policy of {self.table!r} needs {self._name(number)!r}, "
                    "which the token does not carry",
                    status=403,
                )
            value = value[part]
        if value is None:
            raise AuthError(
                f"the policy of {self.table!r} needs {self._name(number)!r}, "
                "which is null in the token",
                status=403,
            )
        return value


def _mark_number(text: str) -> int | None:
    if len(text) > 2 and text[0] == _MARK and text[-1] == _MARK:
        inner = text[1:-1]
        if inner.isdigit():
            return int(inner)
    return None


def _literal(value: Any, policy: Policy, number: int) -> str:
    if isinstance(value, dict | list | tuple) or value is None:
        raise AuthError(
            f"the policy of {policy.table!r} needs {policy._name(number)!r} to be "
            "a string, number or boolean",
            status=403,
        )
    return to_literal(value)


def _parse_template(
    table: str, text: str
) -> tuple[tuple[Filter, ...], tuple[tuple[str, ...], ...]]:
    paths: list[tuple[str, ...]] = []

    def mark(path: str) -> str:
        paths.append(tuple(path.strip(".").split(".")))
        return f"{_MARK}{len(paths) - 1}{_MARK}"

    # A list claim after in/cs/cd becomes one list item, expanded when bound.
    text = _LIST_PLACEHOLDER.sub(lambda m: f"{m.group(1)}.({mark(m.group(2))})", text)
    text = _PLACEHOLDER.sub(lambda m: mark(m.group(1)), text)
    if "{claims" in text:
        raise ConfigurationError(
            f"[policies.{table}] filter has a malformed placeholder; write "
            "{claims.name} (or {claims.a.b} for nested claims)"
        )
    try:
        return tuple(parse_filters(text)), tuple(paths)
    except FilterError as exc:
        raise ConfigurationError(f"[policies.{table}] filter: {exc}") from None


class Policies:
    """Every table's policy, by the table name as configured."""

    def __init__(self, policies: Mapping[str, Policy]) -> None:
        self.by_name = dict(policies)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Policies:
        """Build from the ``[policies]`` table; raises ConfigurationError."""
        out: dict[str, Policy] = {}
        for table, spec in data.items():
            if not isinstance(spec, Mapping):
                raise ConfigurationError(
                    f"[policies.{table}] must be a table of settings "
                    "(roles, filter, columns, rls)"
                )
            unknown = sorted(set(spec) - _SETTINGS)
            if unknown:
                raise ConfigurationError(
                    f"[policies.{table}] has unknown setting(s) {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(_SETTINGS))}"
                )
            roles = spec.get("roles")
            if roles is not None and (
                not isinstance(roles, list)
                or not all(isinstance(r, str) for r in roles)
            ):
                raise ConfigurationError(
                    f"[policies.{table}] roles must be a list of role names"
                )
            text = spec.get("filter", "") or ""
            if not isinstance(text, str):
                raise ConfigurationError(f"[policies.{table}] filter must be a string")
            template, paths = _parse_template(table, text)
            out[table] = Policy(
                table=table,
                roles=tuple(roles) if roles is not None else None,
                filter_text=text,
                template=template,
                paths=paths,
                columns=_columns(table, spec.get("columns")),
                rls=bool(spec.get("rls", False)),
                writes=_writes(table, spec.get("write")),
            )
        return cls(out)

    def for_table(self, qualified: str, short: str) -> Policy | None:
        """The policy of a table (configured by either of its names)."""
        return self.by_name.get(qualified) or self.by_name.get(short)


_SETTINGS = frozenset({"roles", "filter", "columns", "rls", "write"})
#: What ``write`` may allow.
WRITES = frozenset({"insert", "update", "delete"})


def _writes(table: str, value: Any) -> Mapping[str, frozenset[str]] | None:
    if value is None or value is False:
        return None

    def one(item: Any, where: str) -> frozenset[str]:
        if item is True:
            return WRITES
        if item is False:
            return frozenset()
        if isinstance(item, list) and all(isinstance(w, str) for w in item):
            wrong = sorted(set(item) - WRITES)
            if not wrong:
                return frozenset(item)
            raise ConfigurationError(
                f"[policies.{table}] {where} names {', '.join(wrong)}; the writes "
                "are insert, update and delete"
            )
        raise ConfigurationError(
            f"[policies.{table}] {where} must be true, or a list of insert, "
            "update, delete"
        )

    if isinstance(value, Mapping):
        return {str(role): one(item, f"write.{role}") for role, item in value.items()}
    return {"default": one(value, "write")}


def _columns(table: str, value: Any) -> Mapping[str, tuple[str, ...] | None] | None:
    if value is None:
        return None

    def one(item: Any, where: str) -> tuple[str, ...] | None:
        if item == "*":
            return None
        if isinstance(item, list) and all(isinstance(c, str) for c in item):
            return tuple(item)
        raise ConfigurationError(
            f'[policies.{table}] {where} must be a list of column names or "*"'
        )

    if isinstance(value, list):
        return {"default": one(value, "columns")}
    if isinstance(value, Mapping):
        return {str(role): one(item, f"columns.{role}") for role, item in value.items()}
    raise ConfigurationError(
        f"[policies.{table}] columns must be a list, or a table of role = list"
    )
