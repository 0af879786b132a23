"""Decoded rows as JSON (the wal source's log rows): one object per row, text
values as JSON strings, json/jsonb values kept as JSON, unchanged TOAST omitted
with a warning naming the column.  Pending changes go to the database as one
separated text per log column, in runs of one table each."""

from __future__ import annotations

import logging

import pytest

from pgpulse.capture.log_batch import NO_ROW, SEPARATOR, Pending
from pgpulse.capture.pgoutput import UNCHANGED, Column, Relation
from pgpulse.capture.wal_rows import DecodedTable, Described, row_json


def _described(*columns: tuple[str, int]) -> Described:
    relation = Relation(
        1, "public", "t", "d", tuple(Column(*c, False) for c in columns)
    )
    return Described.of(relation)


_T = DecodedTable("public.t", ("id",), "fn")


def test_row_json_of_plain_columns():
    described = _described(("id", 20), ("name", 25), ("note", 25))
    assert described.plain
    row = ("1", 'ü " \\ \n 😀', None)
    assert (
        row_json(described, row, _T)
        == '{"id":"1","name":"ü \\" \\\\ \\n 😀","note":null}'
    )
    with pytest.raises(ValueError):
        row_json(described, ("1", "a"), _T)  # not one value per column


def test_row_json_keeps_json_values_and_omits_unchanged_ones(caplog):
    described = _described(("id", 20), ("doc", 3802), ("js", 114))
    assert not described.plain
    row = ("1", '{"a": [1, null]}', None)
    assert row_json(described, row, _T) == '{"id":"1","doc":{"a": [1, null]},"js":null}'
    plain = _described(("id", 20), ("body", 25))
    with caplog.at_level(logging.WARNING, logger="pgpulse.capture.decoder"):
        assert row_json(plain, ("1", UNCHANGED), _T) == '{"id":"1"}'
    assert "public.t.body unchanged" in caplog.text


def test_row_json_of_a_relation_naming_a_column_twice_still_warns(caplog):
    # Not a table PostgreSQL makes; the general path reports it as it always did.
    described = _described(("a", 25), ("a", 25))
    assert not described.plain
    with caplog.at_level(logging.WARNING, logger="pgpulse.capture.decoder"):
        assert row_json(described, (UNCHANGED, "x"), _T) == '{"a":"x"}'
    assert "public.t.a unchanged" in caplog.text


def test_pending_changes_split_into_runs_of_one_table_and_join_per_column():
    pending = Pending()
    pending.add(7, "INSERT", '{"id":"1"}', NO_ROW, "10")
    pending.add(7, "DELETE", NO_ROW, '{"id":"1"}', "10")
    pending.add(8, "TRUNCATE", NO_ROW, NO_ROW, "11")
    pending.add(7, "INSERT", '{"id":"\\u001e"}', NO_ROW, "12")
    pending.add(7, "INSERT", NO_ROW, NO_ROW, "12", '{"id":2}', typed=True)
    assert len(pending) == 5
    # A run is one table written one way (typed JSON or the decode function).
    assert pending.runs() == [
        (7, False, 0, 2),
        (8, False, 2, 3),
        (7, False, 3, 4),
        (7, True, 4, 5),
    ]
    assert pending.arguments("public.t", 4, 5, typed=True)[5] == '{"id":2}'
    name, ops, news, olds, tss = pending.arguments("public.t", 0, 2)
    assert name == "public.t"
    assert ops.split(SEPARATOR) == ["INSERT", "DELETE"]
    assert news.split(SEPARATOR) == ['{"id":"1"}', NO_ROW]
    assert olds.split(SEPARATOR) == [NO_ROW, '{"id":"1"}']
    assert tss.split(SEPARATOR) == ["10", "10"]
    one = Pending()
    one.add(9, "UPDATE", "{}", "{}", "1")
    assert one.runs() == [(9, False, 0, 1)]


def test_a_value_holding_the_separator_is_refused_not_misaligned():
    # JSON text never holds it raw (escaped as \u001e); were it ever to, the
    # columns would no longer line up: refuse rather than log wrong rows.
    described = _described(("id", 20), ("name", 25))
    row = row_json(described, ("1", "a\x1eb"), _T)
    assert SEPARATOR not in row
    pending = Pending()
    pending.add(1, "INSERT", row, NO_ROW, "1")
    pending.add(1, "INSERT", '{"raw":"a\x1eb"}', NO_ROW, "1")
    assert pending.arguments("public.t", 0, 1)[2] == row
    with pytest.raises(ValueError, match=r"public\.t.*separator"):
        pending.arguments("public.t", 0, 2)
