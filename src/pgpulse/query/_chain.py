"""The filter methods shared by the builder and its ``not_`` proxy.

Every method turns its arguments into the grammar's own tree
(:mod:`pgpulse.routing.filters`), so ``.eq("id", 42)``,
``.filter("id", "eq", "42")`` and the URL ``id=eq.42`` are the same
:class:`~pgpulse.routing.filters.Condition`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from pgpulse.exceptions import FilterError
from pgpulse.routing.filter_values import condition
from pgpulse.routing.filters import And, Condition, Filter, Or, parse_filter

if TYPE_CHECKING:
    from pgpulse.query._builder import QueryBuilder

__all__ = ["FilterMethods", "split_path"]


def split_path(
    reference: str | None, argument: str = "foreign_table"
) -> tuple[str, ...]:
    """``"nodes.checks"`` → ``("nodes", "checks")``; ``None`` is the queried table."""
    if reference is None:
        return ()
    if (
        not isinstance(reference, str)
        or not reference
        or any(not part for part in reference.split("."))
    ):
        raise FilterError(
            f"{argument} must name an embedded table like 'nodes' or "
            f"'nodes.checks', got {reference!r}"
        )
    return tuple(reference.split("."))


class FilterMethods:
    """``eq``, ``neq``, ... ``or_``: each returns a new builder."""

    _negate = False

    def _add(self, filt: Filter, path: tuple[str, ...] = ()) -> QueryBuilder:
        raise NotImplementedError

    def _cond(self, column: str, op: str, value: object) -> QueryBuilder:
        return self._add(condition(column, op, value, self._negate))

    def eq(self, column: str, value: object) -> QueryBuilder:
        """``column = value``; a dotted column (``nodes.status``) filters an embed."""
        return self._cond(column, "eq", value)

    def neq(self, column: str, value: object) -> QueryBuilder:
        """``column <> value``."""
        return self._cond(column, "neq", value)

    def gt(self, column: str, value: object) -> QueryBuilder:
        """``column > value``."""
        return self._cond(column, "gt", value)

    def gte(self, column: str, value: object) -> QueryBuilder:
        """``column >= value``."""
        return self._cond(column, "gte", value)

    def lt(self, column: str, value: object) -> QueryBuilder:
        """``column < value``."""
        return self._cond(column, "lt", value)

    def lte(self, column: str, value: object) -> QueryBuilder:
        """``column <= value``."""
        return self._cond(column, "lte", value)

    def like(self, column: str, pattern: str) -> QueryBuilder:
        """``column LIKE pattern``; ``*`` works like ``%``."""
        return self._cond(column, "like", pattern)

    def ilike(self, column: str, pattern: str) -> QueryBuilder:
        """``column ILIKE pattern`` (case-insensitive); ``*`` works like ``%``."""
        return self._cond(column, "ilike", pattern)

    def is_(self, column: str, value: bool | str | None) -> QueryBuilder:
        """``column IS NULL`` (``None``), ``IS TRUE``, ``IS FALSE``, ``IS UNKNOWN``."""
        return self._cond(column, "is", value)

    def in_(self, column: str, values: Iterable[object]) -> QueryBuilder:
        """``column = ANY(values)``."""
        return self._cond(column, "in", values)

    def contains(self, column: str, value: object) -> QueryBuilder:
        """``column @> value`` for arrays (a list), jsonb (a dict) or ranges (str)."""
        return self._cond(column, "cs", value)

    def contained_by(self, column: str, value: object) -> QueryBuilder:
        """``column <@ value``."""
        return self._cond(column, "cd", value)

    def ov(self, column: str, value: object) -> QueryBuilder:
        """``column && value``: arrays or ranges that overlap."""
        return self._cond(column, "ov", value)

    overlaps = ov

    def sl(self, column: str, range_: str) -> QueryBuilder:
        """``column << range``: strictly left of (postgrest-py ``range_lt``)."""
        return self._cond(column, "sl", range_)

    def sr(self, column: str, range_: str) -> QueryBuilder:
        """``column >> range``: strictly right of (``range_gt``)."""
        return self._cond(column, "sr", range_)

    def nxl(self, column: str, range_: str) -> QueryBuilder:
        """``column &> range``: does not extend to the left of (``range_gte``)."""
        return self._cond(column, "nxl", range_)

    def nxr(self, column: str, range_: str) -> QueryBuilder:
        """``column &< range``: does not extend to the right of (``range_lte``)."""
        return self._cond(column, "nxr", range_)

    def adj(self, column: str, range_: str) -> QueryBuilder:
        """``column -|- range``: adjacent (``range_adjacent``)."""
        return self._cond(column, "adj", range_)

    range_lt = sl
    range_gt = sr
    range_gte = nxl
    range_lte = nxr
    range_adjacent = adj

    def _quantified(
        self, column: str, op: str, arg: str, patterns: str | Iterable[str]
    ) -> QueryBuilder:
        items = patterns.split(",") if isinstance(patterns, str) else list(patterns)
        base = condition(column, op, "", self._negate)  # checks the column
        values = tuple(str(p).strip() for p in items)
        return self._add(Condition(base.column, op, values, base.negate, arg))

    def like_any_of(self, column: str, patterns: str | Iterable[str]) -> QueryBuilder:
        """``column LIKE ANY(patterns)`` (``"a*,b*"`` or a list)."""
        return self._quantified(column, "like", "any", patterns)

    def like_all_of(self, column: str, patterns: str | Iterable[str]) -> QueryBuilder:
        """``column LIKE ALL(patterns)``."""
        return self._quantified(column, "like", "all", patterns)

    def ilike_any_of(self, column: str, patterns: str | Iterable[str]) -> QueryBuilder:
        """``column ILIKE ANY(patterns)``."""
        return self._quantified(column, "ilike", "any", patterns)

    def ilike_all_of(self, column: str, patterns: str | Iterable[str]) -> QueryBuilder:
        """``column ILIKE ALL(patterns)``."""
        return self._quantified(column, "ilike", "all", patterns)

    def text_search(
        self,
        column: str,
        query: str,
        config: str | None = None,
        type: str | None = None,
    ) -> QueryBuilder:
        """Full-text search: ``to_tsquery`` (``type`` None), ``plainto_tsquery``
        (``"plain"``), ``phraseto_tsquery`` (``"phrase"``) or
        ``websearch_to_tsquery`` (``"websearch"``, or postgrest-py's
        ``"web_search"``), with an optional text search
        configuration (``"english"``)."""
        ops = {
            None: "fts",
            "plain": "plfts",
            "phrase": "phfts",
            "websearch": "wfts",
            "web_search": "wfts",  # postgrest-py's spelling
        }
        if type not in ops:
            raise FilterError(
                f"text_search type must be plain, phrase, websearch or None, "
                f"got {type!r}"
            )
        return self._add(condition(column, ops[type], query, self._negate, config))

    def filter(self, column: str, operator: str, value: object) -> QueryBuilder:
        """Any grammar operator by name: ``filter("id", "in", "(1,2)")``.

        A string *value* is read as grammar text (as in a URL); other values as
        Python values.  ``operator`` may start with ``not.``.
        """
        if isinstance(value, str):
            filt = parse_filter(column, f"{operator}.{value}")
            if self._negate:
                filt = replace(filt, negate=not filt.negate)
            return self._add(filt)
        negate = operator.startswith("not.")
        op = operator.removeprefix("not.")
        return self._add(condition(column, op, value, negate != self._negate))

    def match(self, values: Mapping[str, object]) -> QueryBuilder:
        """``eq`` on every key of *values*."""
        if not isinstance(values, Mapping) or not values:
            raise FilterError(f"match() takes a non-empty dict, got {values!r}")
        conditions = [condition(c, "eq", v) for c, v in values.items()]
        if self._negate:
            return self._add(And(tuple(conditions), negate=True))
        builder = self._add(conditions[0])
        for cond in conditions[1:]:
            builder = builder._add(cond)
        return builder

    def or_(
        self,
        filters: str,
        *,
        reference_table: str | None = None,
        foreign_table: str | None = None,
    ) -> QueryBuilder:
        """Any of ``"a.eq.1,b.gt.2"`` (PostgREST syntax, nesting with ``and(...)``).

        *reference_table* (alias *foreign_table*) applies it to an embedded table.
        """
        if not isinstance(filters, str) or not filters.strip():
            raise FilterError(
                f"or_ takes a string like 'status.eq.new,pages.gt.10', got {filters!r}"
            )
        parsed = parse_filter("or", f"({filters})")
        if not isinstance(parsed, Or):  # pragma: no cover - parse_filter("or") is Or
            raise FilterError(f"could not read {filters!r} as an or-filter")
        if self._negate:
            parsed = replace(parsed, negate=True)
        return self._add(parsed, split_path(reference_table or foreign_table))
