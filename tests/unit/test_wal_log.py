"""Decoded rows as JSON (the wal source's log rows): one object per row, text
values as JSON strings, json/jsonb values kept as JSON, unchanged TOAST omitted
with a warning naming the column."""

from __future__ import annotations

import logging

import pytest

from pgpulse.capture.pgoutput import UNCHANGED, Column, Relation
from pgpulse.capture.wal_log import _Described, _json, _Table


def _described(*columns: tuple[str, int]) -> _Described:
    relation = Relation(
        1, "public", "t", "d", tuple(Column(*c, False) for c in columns)
    )
    return _Described.of(relation)


_T = _Table("public.t", ("id",), "fn")


def test_row_json_of_plain_columns():
    described = _described(("id", 20), ("name", 25), ("note", 25))
    assert described.plain
    row = ("1", 'ü " \\ \n 😀', None)
    assert (
        _json(described, row, _T) == '{"id":"1","name":"ü \\" \\\\ \\n 😀","note":null}'
    )
    with pytest.raises(ValueError):
        _json(described, ("1", "a"), _T)  # not one value per column


def test_row_json_keeps_json_values_and_omits_unchanged_ones(caplog):
    described = _described(("id", 20), ("doc", 3802), ("js", 114))
    assert not described.plain
    row = ("1", '{"a": [1, null]}', None)
    assert _json(described, row, _T) == '{"id":"1","doc":{"a": [1, null]},"js":null}'
    plain = _described(("id", 20), ("body", 25))
    with caplog.at_level(logging.WARNING, logger="pgpulse.decoder"):
        assert _json(plain, ("1", UNCHANGED), _T) == '{"id":"1"}'
    assert "public.t.body unchanged" in caplog.text


def test_row_json_of_a_relation_naming_a_column_twice_still_warns(caplog):
    # Not a table PostgreSQL makes; the general path reports it as it always did.
    described = _described(("a", 25), ("a", 25))
    assert not described.plain
    with caplog.at_level(logging.WARNING, logger="pgpulse.decoder"):
        assert _json(described, (UNCHANGED, "x"), _T) == '{"a":"x"}'
    assert "public.t.a unchanged" in caplog.text
