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
from typing import Final, NamedTuple

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


# The messages are named tuples: immutable, and built in C from what struct
# unpacks (a frozen dataclass sets each field through object.__setattr__, which
# was a tenth of the gateway's CPU under pgbench).  Like any tuples they compare
# by value alone, Begin(1, 2, 3) == Commit(1, 2, 3): tell them apart by type.


class Column(NamedTuple):
    """One column of a :class:`Relation`."""

    name: str
    type_oid: int
    is_key: bool


class Relation(NamedTuple):
    """A table's description, sent before its first change and after any
    change to it."""

    relid: int
    schema: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


class Begin(NamedTuple):
    """The start of a committed transaction."""

    final_lsn: int
    """LSN of the transaction's commit record."""
    commit_us: int
    """Commit time, microseconds since :data:`EPOCH` (converted where needed)."""
    xid: int


class Commit(NamedTuple):
    """The end of a committed transaction."""

    commit_lsn: int
    end_lsn: int
    """The position after the commit record: what the slot may confirm."""
    commit_us: int


class RowChange(NamedTuple):
    """One row inserted, updated or deleted."""

    op: str
    """``INSERT``, ``UPDATE`` or ``DELETE``."""
    relid: int
    new: tuple[Value, ...] | None
    old: tuple[Value, ...] | None
    old_is_key: bool = False
    """``old`` holds only the replica identity key columns (others ``None``)."""


class Truncate(NamedTuple):
    """Tables truncated in one statement."""

    relids: tuple[int, ...]


Message = Begin | Commit | Relation | RowChange | Truncate


_I8 = struct.Struct("!b")
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")

# Whole fixed headers, after the kind byte, in one unpack each (the hot path:
# every transaction is a BEGIN, its rows and a COMMIT).  Their fields are in
# the order of the message types' fields, so the unpacked tuple becomes the
# message as it is.
_BEGIN = struct.Struct("!QqI")  # final_lsn, commit_us, xid
_COMMIT = struct.Struct("!xQQq")  # flags (unused), commit_lsn, end_lsn, commit_us
_ROW = struct.Struct("!IB")  # INSERT/UPDATE/DELETE: relid, then a tuple marker

#: A message built straight from its fields' tuple: ``tuple.__new__`` in C,
#: not the named tuple's ``__new__`` (a Python function).
_new = tuple.__new__


class _Reader:
    """A cursor over one message, for the kinds that are not on the hot path."""

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


def _tuple_data(data: bytes, pos: int) -> tuple[tuple[Value, ...], int]:
    """The TupleData at *pos*: its values, and the position after it.

    A function over locals, not a cursor object: it runs once per row."""
    size_at = _U32.unpack_from  # unsigned: a negative size cannot pass the check
    length = len(data)
    try:
        (count,) = _I16.unpack_from(data, pos)
        pos += 2
        values: list[Value] = []
        append = values.append
        for _ in range(count):
            kind = data[pos]
            if kind == 116:  # 't': text
                (size,) = size_at(data, pos + 1)
                pos += 5
                end = pos + size
                if end > length:
                    raise ProtocolError(
                        f"column value runs past the message end ({size} bytes at "
                        f"byte {pos}, the message has {length})"
                    )
                append(data[pos:end].decode("utf-8"))
                pos = end
            elif kind == 110:  # 'n': NULL
                append(None)
                pos += 1
            elif kind == 117:  # 'u': unchanged TOAST
                append(UNCHANGED)
                pos += 1
            else:
                raise ProtocolError(
                    f"unknown column kind {chr(kind)!r} (binary values are not "
                    "requested)"
                )
    except (struct.error, IndexError):
        raise ProtocolError(f"message ends inside a tuple at byte {pos}") from None
    return tuple(values), pos


#: Name and fixed size of the messages whose fixed part parse() unpacks at once.
_FIXED: Final = {
    66: ("BEGIN", 1 + _BEGIN.size),
    67: ("COMMIT", 1 + _COMMIT.size),
    73: ("INSERT", 1 + _ROW.size),
    85: ("UPDATE", 1 + _ROW.size),
    68: ("DELETE", 1 + _ROW.size),
}


def parse(data: bytes) -> Message | None:
    """One pgoutput message; ``None`` for kinds the capture does not need.

    BEGIN, COMMIT and row changes are most of the stream: each fixed part is
    one precompiled unpack and each message one tuple built in C."""
    if not data:
        raise ProtocolError("message ends at byte 0: it is empty")
    kind = data[0]
    try:
        if kind == 73:  # 'I'
            relid, marker = _ROW.unpack_from(data, 1)
            if marker != 78:  # 'N'
                raise ProtocolError("INSERT without a new tuple")
            values = _tuple_data(data, 6)[0]
            return _new(RowChange, ("INSERT", relid, values, None, False))
        if kind == 66:  # 'B'
            return _new(Begin, _BEGIN.unpack_from(data, 1))
        if kind == 67:  # 'C'
            return _new(Commit, _COMMIT.unpack_from(data, 1))
        if kind == 85:  # 'U'
            return _update(data)
        if kind == 68:  # 'D'
            relid, marker = _ROW.unpack_from(data, 1)
            if marker != 75 and marker != 79:  # 'K', 'O'
                raise ProtocolError(
                    f"DELETE: expected an old tuple, got {chr(marker)!r}"
                )
            values = _tuple_data(data, 6)[0]
            return _new(RowChange, ("DELETE", relid, None, values, marker == 75))
    except struct.error:
        name, size = _FIXED[kind]
        raise ProtocolError(
            f"{name} message ends inside a field: {len(data)} bytes, its fixed "
            f"part has {size}"
        ) from None
    return _parse_other(kind, data)


def _update(data: bytes) -> RowChange:
    """An UPDATE: an optional old tuple (key or full row), then the new one."""
    relid, marker = _ROW.unpack_from(data, 1)
    old: tuple[Value, ...] | None = None
    old_is_key = False
    pos = 6
    if marker == 75 or marker == 79:  # 'K', 'O'
        old, pos = _tuple_data(data, pos)
        old_is_key = marker == 75
        if pos >= len(data):
            raise ProtocolError(
                f"UPDATE: message ends at byte {pos}, expected a new tuple"
            )
        marker = data[pos]
        pos += 1
    if marker != 78:  # 'N'
        raise ProtocolError(f"UPDATE: expected a new tuple, got {chr(marker)!r}")
    values = _tuple_data(data, pos)[0]
    return _new(RowChange, ("UPDATE", relid, values, old, old_is_key))


def _parse_other(kind: int, data: bytes) -> Message | None:
    """The rarer kinds, read with a cursor."""
    reader = _Reader(data, 1)
    if kind == 82:  # 'R'
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
    if kind == 84:  # 'T'
        count = reader.take(_I32)
        reader.take(_I8)  # options: CASCADE / RESTART IDENTITY
        return Truncate(tuple(reader.take(_U32) for _ in range(count)))
    if kind in b"YOM":
        return None  # types, origins, logical messages: not needed
    raise ProtocolError(f"unknown pgoutput message kind {chr(kind)!r}")
