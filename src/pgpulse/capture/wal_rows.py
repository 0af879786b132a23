"""What one decoded row becomes in the log: its JSON, as the trigger writes it.

Why apart from :mod:`pgpulse.capture.wal_log` (which writes batches into the
log, exactly once): this is the per-row part, run once per decoded row.  A
relation's description is worked out once per Relation message
(:class:`Described`); rows of tables whose types allow it are built by the
decoder itself (:mod:`pgpulse.capture.typed_rows`), the others keep their text
values for the table's decode function.  Also: LSNs as numbers and text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from pgpulse.capture.log_batch import NO_ROW
from pgpulse.capture.pgoutput import Relation, Value
from pgpulse.capture.typed_rows import TypedRows

__all__ = [
    "DecodedTable",
    "Described",
    "lsn_text",
    "parse_lsn",
    "row_json",
    "typed_entry",
]

log = logging.getLogger("pgpulse.capture.decoder")

_JSON_TYPES = frozenset({114, 3802})  # json, jsonb: values are JSON already


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass
class DecodedTable:
    name: str
    pk: tuple[str, ...]
    fn: str | None
    publish: str = "rows"
    columns: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    table_columns: tuple[str, ...] | None = None
    """Its columns now; ``None``: not watched through the WAL any more (its
    rows keep the decode function)."""

    def typed(self, relation: Relation) -> TypedRows | None:
        if self.fn is None or self.table_columns is None:
            return None
        return TypedRows.plan(
            relation,
            self.table_columns,
            self.publish,
            self.columns,
            self.exclude,
            self.pk,
        )


@dataclass(frozen=True, slots=True)
class Described:
    """A relation as its last Relation message describes it, with what every
    row's JSON needs worked out once (:func:`row_json` runs once per row)."""

    relation: Relation
    names: tuple[str, ...]
    plain: bool
    """No json/jsonb column (every text value is a JSON string) and no name
    twice (each value has its own key, so an UNCHANGED one is never hidden)."""

    @classmethod
    def of(cls, relation: Relation) -> Described:
        names = tuple(c.name for c in relation.columns)
        return cls(
            relation,
            names,
            len(set(names)) == len(names)
            and not any(c.type_oid in _JSON_TYPES for c in relation.columns),
        )


def typed_entry(
    plan: TypedRows,
    op: str,
    new: tuple[Value, ...] | None,
    old: tuple[Value, ...] | None,
) -> tuple[str, str, str] | None:
    """(row, old row, key) as the decode function would log them, or ``None``
    when a value is missing (the decode function handles that entry)."""
    if plan.keys is not None:
        # 'keys' tables log the key (the old one for a DELETE) and no rows.
        source = old if op == "DELETE" else new
        pk = None if source is None else plan.json(source, plan.keys)
        return None if pk is None else (NO_ROW, NO_ROW, pk)
    row: str | None = NO_ROW
    old_row: str | None = NO_ROW
    if new is not None and op in ("INSERT", "UPDATE"):
        row = plan.json(new, plan.shown)
    if old is not None and op in ("UPDATE", "DELETE"):
        old_row = plan.json(old, plan.shown)
    if row is None or old_row is None:
        return None
    return row, old_row, NO_ROW


def row_json(
    described: Described, values: tuple[Value, ...], table: DecodedTable
) -> str:
    """A row's text values as one JSON object; json/jsonb values stay JSON."""
    names = described.names
    if described.plain and len(values) == len(names):
        # The common row, built and serialized in C.  UNCHANGED (not a type
        # orjson knows) and str subclasses (passed through) raise TypeError and
        # take the general path below, which treats them as it always has.
        row = dict(zip(names, values, strict=False))  # lengths checked above
        try:
            return orjson.dumps(row, option=orjson.OPT_PASSTHROUGH_SUBCLASS).decode()
        except TypeError:
            pass
    obj: dict[str, Any] = {}
    for column, value in zip(described.relation.columns, values, strict=True):
        if value.__class__ is str:
            if column.type_oid in _JSON_TYPES:
                obj[column.name] = orjson.Fragment(value)
            else:
                obj[column.name] = value
        elif value is None:
            obj[column.name] = None
        else:
            log.warning(
                "wal decoder: %s.%s unchanged and not in the WAL (replica identity is "
                "not full): the event omits it",
                table.name,
                column.name,
            )
    return orjson.dumps(obj).decode()
