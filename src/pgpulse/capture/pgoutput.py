"""Parsing PostgreSQL's ``pgoutput`` logical replication messages (protocol 1).

Why our own parser: the wal capture source (``pgpulse/decoder.py``) needs only
the messages of committed transactions (Begin, Relation, Insert, Update, Delete,
Truncate, Commit) with column values in text form, and this is the whole format.
Values stay text: the database turns them back into typed rows (see the decode
functions in the capture schema), so no type is interpreted here.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "EPOCH",
    "UNCHANGED",
    "Begin",
    "Column",
    "Commit",
    "Message",
    "ProtocolError",
    "Relation",
    "RowChange",
    "Truncate",
    "Unchanged",
    "Value",
    "parse",
]

#: PostgreSQL timestamps count microseconds from here.
EPOCH: Final = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class Unchanged:
    """An unchanged TOASTed value of an UPDATE: the WAL does not repeat it."""

    _instance: Unchanged | None = None

    def __new__(cls) -> Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = Unchanged()

#: A column value: its text form, ``None`` for SQL NULL, or :data:`UNCHANGED`.
Value = str | None | Unchanged


class ProtocolError(ValueError):
    """A message that is not valid pgoutput protocol 1."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    schema: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    """LSN of the transaction's commit record."""
    commit_us: int
    """Commit time, microseconds since :data:`EPOCH` (converted where needed)."""
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    """The position after the commit record: what the slot may confirm."""
    commit_us: int


@dataclass(frozen=True, slots=True)
class RowChange:
    op: str
    """``INSERT``, ``UPDATE`` or ``DELETE``."""
    relid: int
    new: tuple[Value, ...] | None
    old: tuple[Value, ...] | None
    old_is_key: bool = False
    """``old`` holds only the replica identity key columns (others ``None``)."""


@dataclass(frozen=True, slots=True)
class Truncate:
    relids: tuple[int, ...]


Message = Begin | Commit | Relation | RowChange | Truncate


_I8 = struct.Struct("!b")
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_I64 = struct.Struct("!q")


class _Reader:
    """A cursor over one message (precompiled structs: this is the hot path)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, fmt: struct.Struct) -> int:
        try:
            (value,) = fmt.unpack_from(self.data, self.pos)
        except struct.error:
            raise ProtocolError(
                f"message ends inside a field at byte {self.pos}"
            ) from None
        self.pos += fmt.size
        return int(value)

    def byte(self) -> str:
        if self.pos >= len(self.data):
            raise ProtocolError(f"message ends at byte {self.pos}, expected more")
        value = chr(self.data[self.pos])
        self.pos += 1
        return value

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolError(f"unterminated string at byte {self.pos}")
        value = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return value

    def tuple_data(self) -> tuple[Value, ...]:
        data = self.data
        pos = self.pos
        try:
            (count,) = _I16.unpack_from(data, pos)
            pos += 2
            values: list[Value] = []
            for _ in range(count):
                kind = data[pos]
                pos += 1
                if kind == 116:  # 't': text
                    (size,) = _I32.unpack_from(data, pos)
                    pos += 4
                    end = pos + size
                    if end > len(data):
                        raise ProtocolError(
                            f"column value runs past the message end ({size} bytes)"
                        )
                    values.append(data[pos:end].decode("utf-8"))
                    pos = end
                elif kind == 110:  # 'n': NULL
                    values.append(None)
                elif kind == 117:  # 'u': unchanged TOAST
                    values.append(UNCHANGED)
                else:
                    raise ProtocolError(
                        f"unknown column kind {chr(kind)!r} (binary values are not "
                        "requested)"
                    )
        except (struct.error, IndexError):
            raise ProtocolError(f"message ends inside a tuple at byte {pos}") from None
        self.pos = pos
        return tuple(values)


def parse(data: bytes) -> Message | None:
    """One pgoutput message; ``None`` for kinds the capture does not need."""
    reader = _Reader(data)
    kind = reader.byte()
    if kind == "B":
        final_lsn = reader.take(_U64)
        commit_us = reader.take(_I64)
        return Begin(final_lsn, commit_us, reader.take(_U32))
    if kind == "C":
        reader.take(_I8)  # flags, unused
        commit_lsn = reader.take(_U64)
        end_lsn = reader.take(_U64)
        return Commit(commit_lsn, end_lsn, reader.take(_I64))
    if kind == "R":
        relid = reader.take(_U32)
        schema = reader.string() or "pg_catalog"
        name = reader.string()
        identity = reader.byte()
        columns = []
        for _ in range(reader.take(_I16)):
            flags = reader.take(_I8)
            col_name = reader.string()
            type_oid = reader.take(_U32)
            reader.take(_I32)  # typmod
            columns.append(Column(col_name, type_oid, bool(flags & 1)))
        return Relation(relid, schema, name, identity, tuple(columns))
    if kind == "I":
        relid = reader.take(_U32)
        if reader.byte() != "N":
            raise ProtocolError("INSERT without a new tuple")
        return RowChange("INSERT", relid, reader.tuple_data(), None)
    if kind == "U":
        relid = reader.take(_U32)
        marker = reader.byte()
        old: tuple[Value, ...] | None = None
        if marker in ("K", "O"):
            old = reader.tuple_data()
            old_is_key = marker == "K"
            marker = reader.byte()
        else:
            old_is_key = False
        if marker != "N":
            raise ProtocolError(f"UPDATE: expected a new tuple, got {marker!r}")
        return RowChange("UPDATE", relid, reader.tuple_data(), old, old_is_key)
    if kind == "D":
        relid = reader.take(_U32)
        marker = reader.byte()
        if marker not in ("K", "O"):
            raise ProtocolError(f"DELETE: expected an old tuple, got {marker!r}")
        return RowChange("DELETE", relid, None, reader.tuple_data(), marker == "K")
    if kind == "T":
        count = reader.take(_I32)
        reader.take(_I8)  # options: CASCADE / RESTART IDENTITY
        return Truncate(tuple(reader.take(_U32) for _ in range(count)))
    if kind in ("Y", "O", "M"):
        return None  # types, origins, logical messages: not needed
    raise ProtocolError(f"unknown pgoutput message kind {kind!r}")
