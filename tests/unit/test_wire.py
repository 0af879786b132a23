"""Wire encodings of a change."""

from __future__ import annotations

import orjson

from pgpulse.log.change import Change
from pgpulse.routing.wire import Variant, control_event, encoded, payload


def _change() -> Change:
    return Change(
        id=7,
        xid=9,
        table="public.docs",
        name="docs",
        op="UPDATE",
        pk='{"id": 1}',
        row='{"id": 1, "t": "line\\nbreak"}',
        old='{"id": 1, "t": ""}',
        ts='"2026-01-01T00:00:00+00:00"',
        event_id="1:2:~2:3:~7",
    )


def test_sse_event_is_one_block_with_id_event_and_single_line_data():
    raw = encoded(_change(), Variant.FULL, "sse")
    head, data = raw.split(b"data: ")
    assert head == b"id: 1:2:~2:3:~7\nevent: change\n"
    assert data.endswith(b"\n\n") and data.count(b"\n") == 2
    payload = orjson.loads(data)
    assert payload["row"]["t"] == "line\nbreak"
    assert payload == {
        "table": "docs",
        "op": "UPDATE",
        "pk": {"id": 1},
        "row": {"id": 1, "t": "line\nbreak"},
        "old": {"id": 1, "t": ""},
        "ts": "2026-01-01T00:00:00+00:00",
    }


def test_moved_variants_hide_the_row_outside_the_filter():
    out = orjson.loads(payload(_change(), Variant.MOVED_OUT))
    assert out["op"] == "DELETE" and out["row"] is None and out["moved"]
    into = orjson.loads(payload(_change(), Variant.MOVED_IN))
    assert into["op"] == "INSERT" and into["old"] is None and into["moved"]


def test_websocket_frame_is_json_with_the_same_payload():
    frame = orjson.loads(encoded(_change(), Variant.FULL, "ws"))
    assert frame["type"] == "change" and frame["id"] == "1:2:~2:3:~7"
    assert frame["data"]["pk"] == {"id": 1}


def test_control_events():
    assert control_event("sse", "reset", {"reason": "x"}, "5:5:") == (
        b'id: 5:5:\nevent: reset\ndata: {"reason":"x"}\n\n'
    )
    assert orjson.loads(control_event("ws", "ready", {"cursor": "1:1:"})) == {
        "type": "ready",
        "cursor": "1:1:",
    }
