"""How changes look on NATS JetStream: stream, subjects, message bodies.

One stream per database (``PGPULSE_<db>``), one subject per table
(``pgpulse.<db>.<schema>.<table>``), so a consumer can take all tables or a
few.  Each message is one change: its body the event's JSON (the same fields
an SSE client gets, plus the log id and event id), its ``Nats-Msg-Id`` the
change's id in the log, which never changes however a change is re-read, so
JetStream drops a re-publish.  ``Pgpulse-Prev`` is the log position the
change's read started from: where a relay taking over resumes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from pgpulse.log.change import Change

__all__ = [
    "MSG_ID",
    "PREV",
    "Published",
    "body",
    "stream_name",
    "subject",
    "subjects",
]

MSG_ID = "Nats-Msg-Id"
PREV = "Pgpulse-Prev"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _token(name: str) -> str:
    """A subject token for any identifier (``.``, spaces, ``*`` and ``>`` have
    meaning in subjects): other characters as ``%XX``."""
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)


def stream_name(database: str) -> str:
    return "PGPULSE_" + _token(database).replace("%", "_")


def subjects(database: str) -> str:
    """The wildcard of every table's subject of *database*."""
    return f"pgpulse.{_token(database)}.>"


def subject(database: str, table: str) -> str:
    """``pgpulse.<db>.<schema>.<table>`` for ``schema.table``."""
    schema, _, name = table.partition(".")
    return f"pgpulse.{_token(database)}.{_token(schema)}.{_token(name)}"


def body(change: Change) -> bytes:
    """The change as JSON; row JSON from the log is spliced in as it is."""
    parts = [
        b'{"id":',
        str(change.id).encode(),
        b',"event_id":',
        orjson.dumps(change.event_id),
        b',"xid":',
        str(change.xid).encode(),
        b',"table":',
        orjson.dumps(change.table),
        b',"name":',
        orjson.dumps(change.name),
        b',"op":',
        orjson.dumps(change.op),
        b',"pk":',
        change.pk.encode(),
        b',"row":',
        (change.row or "null").encode(),
        b',"old":',
        (change.old or "null").encode(),
        b',"ts":',
        change.ts.encode(),
        b"}",
    ]
    return b"".join(parts)


@dataclass(frozen=True)
class Published:
    """A change as read back from the stream."""

    id: int
    event_id: str
    table: str
    op: str
    pk: Any
    row: Any
    seq: int

    @classmethod
    def parse(cls, data: bytes, seq: int) -> Published:
        doc = orjson.loads(data)
        return cls(
            doc["id"],
            doc["event_id"],
            doc["table"],
            doc["op"],
            doc["pk"],
            doc["row"],
            seq,
        )
