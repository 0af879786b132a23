"""pgoutput messages: built byte by byte as the protocol documents them."""

from __future__ import annotations

import struct

import pytest

from pgpulse.capture.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    ProtocolError,
    Relation,
    RowChange,
    Truncate,
    parse,
)


def _tuple(*values: object) -> bytes:
    out = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED:
            out += b"u"
        else:
            data = str(value).encode()
            out += b"t" + struct.pack("!i", len(data)) + data
    return out


def test_begin_and_commit():
    begin = parse(b"B" + struct.pack("!QqI", 0x1_0000_0010, 123, 77))
    # Messages are tuples, equal to any tuple of the same values: check types too.
    assert type(begin) is Begin
    assert begin == Begin(final_lsn=0x1_0000_0010, commit_us=123, xid=77)
    commit = parse(b"C" + struct.pack("!bQQq", 1, 10, 20, -456))
    assert type(commit) is Commit
    assert commit == Commit(commit_lsn=10, end_lsn=20, commit_us=-456)
    assert (commit.commit_lsn, commit.end_lsn, commit.commit_us) == (10, 20, -456)
    # Unsigned and signed 64-bit fields at their extremes.
    top = parse(b"B" + struct.pack("!QqI", 2**64 - 1, -(2**63), 2**32 - 1))
    assert top == Begin(2**64 - 1, -(2**63), 2**32 - 1)


def test_messages_are_immutable():
    begin = parse(b"B" + struct.pack("!QqI", 1, 2, 3))
    assert isinstance(begin, Begin)
    with pytest.raises(AttributeError):
        begin.xid = 4  # type: ignore[misc]
    assert RowChange("INSERT", 5, ("1",), None).old_is_key is False


def test_relation():
    body = struct.pack("!I", 16384) + b"public\0docs\0" + b"f" + struct.pack("!h", 2)
    body += struct.pack("!b", 1) + b"id\0" + struct.pack("!Ii", 23, -1)
    body += struct.pack("!b", 0) + b"t\xc3\xbctel\0" + struct.pack("!Ii", 25, -1)
    rel = parse(b"R" + body)
    assert isinstance(rel, Relation)
    assert (rel.relid, rel.schema, rel.name, rel.replica_identity) == (
        16384,
        "public",
        "docs",
        "f",
    )
    assert [(c.name, c.type_oid, c.is_key) for c in rel.columns] == [
        ("id", 23, True),
        ("tütel", 25, False),
    ]
    # pg_catalog tables are sent with an empty namespace.
    empty = struct.pack("!I", 1) + b"\0t\0d" + struct.pack("!h", 0)
    assert parse(b"R" + empty) == Relation(1, "pg_catalog", "t", "d", ())


def test_row_changes_with_nulls_unchanged_toast_and_unicode():
    insert = parse(b"I" + struct.pack("!I", 5) + b"N" + _tuple(1, None, "ü ' \""))
    assert type(insert) is RowChange
    assert insert == RowChange("INSERT", 5, (str(1), None, "ü ' \""), None)
    assert insert.old_is_key is False
    empty = parse(b"I" + struct.pack("!I", 2**32 - 1) + b"N" + _tuple("", None))
    assert empty == RowChange("INSERT", 2**32 - 1, ("", None), None)
    update = parse(
        b"U"
        + struct.pack("!I", 5)
        + b"O"
        + _tuple(1, "a")
        + b"N"
        + _tuple(1, UNCHANGED)
    )
    assert update == RowChange("UPDATE", 5, ("1", UNCHANGED), ("1", "a"), False)
    keyed = parse(b"U" + struct.pack("!I", 5) + b"K" + _tuple(1) + b"N" + _tuple(2))
    assert isinstance(keyed, RowChange) and keyed.old_is_key
    plain = parse(b"U" + struct.pack("!I", 5) + b"N" + _tuple(2, "b"))
    assert plain == RowChange("UPDATE", 5, ("2", "b"), None)
    delete = parse(b"D" + struct.pack("!I", 5) + b"O" + _tuple(1, "a"))
    assert delete == RowChange("DELETE", 5, None, ("1", "a"), False)
    keyed_delete = parse(b"D" + struct.pack("!I", 5) + b"K" + _tuple(1, None))
    assert keyed_delete == RowChange("DELETE", 5, None, ("1", None), True)
    truncate = parse(b"T" + struct.pack("!ibII", 2, 0, 5, 6))
    assert truncate == Truncate((5, 6))


def test_kinds_the_capture_does_not_need_are_skipped():
    assert parse(b"Y" + struct.pack("!I", 1) + b"public\0t\0") is None
    assert parse(b"O" + struct.pack("!Q", 1) + b"origin\0") is None


@pytest.mark.parametrize(
    "message, why",
    [
        (b"", "ends"),
        (b"Z", "unknown pgoutput message kind"),
        (b"B" + b"\0" * 5, "BEGIN message ends inside a field"),
        (b"C" + b"\0" * 24, "COMMIT message ends inside a field"),
        (b"I" + struct.pack("!I", 5), "INSERT message ends inside a field"),
        (b"U" + b"\0\0", "UPDATE message ends inside a field"),
        (b"D", "DELETE message ends inside a field"),
        (b"I" + struct.pack("!I", 5) + b"N", "ends inside a tuple"),
        (b"I" + struct.pack("!I", 5) + b"N" + b"\0\1", "ends inside a tuple"),
        (
            b"I" + struct.pack("!I", 5) + b"N" + struct.pack("!h", 1) + b"t\0\0",
            "ends inside a tuple",
        ),
        (b"I" + struct.pack("!I", 5) + b"X", "without a new tuple"),
        (
            b"I"
            + struct.pack("!I", 5)
            + b"N"
            + struct.pack("!h", 1)
            + b"t\0\0\0\x09ab",
            "runs past the message end",
        ),
        (  # a negative size is not read as a step back
            b"I"
            + struct.pack("!I", 5)
            + b"N"
            + struct.pack("!hci", 1, b"t", -1)
            + b"ab",
            "runs past the message end",
        ),
        (
            b"I" + struct.pack("!I", 5) + b"N" + struct.pack("!h", 1) + b"b",
            "unknown column kind",
        ),
        (
            b"I" + struct.pack("!I", 5) + b"N" + struct.pack("!h", 2) + b"n",
            "ends inside a tuple",
        ),
        (b"D" + struct.pack("!I", 5) + b"N" + _tuple(1), "expected an old tuple"),
        (b"D" + struct.pack("!I", 5) + b"O" + b"\0\2n", "ends inside a tuple"),
        (b"U" + struct.pack("!I", 5) + b"X" + _tuple(1), "expected a new tuple"),
        (
            b"U" + struct.pack("!I", 5) + b"O" + _tuple(1) + b"O" + _tuple(1),
            "expected a new tuple, got 'O'",
        ),
        (
            b"U" + struct.pack("!I", 5) + b"K" + _tuple(1),
            "ends at byte 14, expected a new tuple",
        ),
        (b"U" + struct.pack("!I", 5) + b"N", "ends inside a tuple"),
        (b"T" + struct.pack("!ib", 2, 0) + struct.pack("!I", 5), "ends inside a field"),
        (b"R" + struct.pack("!I", 1) + b"public", "unterminated string"),
    ],
)
def test_malformed_messages_raise_protocol_errors(message, why):
    with pytest.raises(ProtocolError, match=why):
        parse(message)
