"""How changes look on NATS JetStream: stream, subjects, message bodies.

One stream per database (``PGPULSE_<db>``), one subject per table
(``pgpulse.<db>.<schema>.<table>``), so a consumer can take all tables or a
few.  Each message is one change: its body the event's JSON (the log id, the
event id, the table, op and the rows; ``pk``, ``row`` and ``old`` are
PostgreSQL's JSON *text*, as strings, so numbers keep every digit), its
``Nats-Msg-Id`` the change's id in the log, which never changes however a
change is re-read, so JetStream drops a re-publish.  ``Pgpulse-Prev`` is the
log position the change's read started from (where a relay taking over
resumes); ``Pgpulse-End`` marks the last change of a read: a gateway moves its
position to the read's snapshot there (:mod:`pgpulse.broker.feed`).

Notices that are not changes (``catalog``: a table was watched, a migration
ran) go to the core subject ``pgpulse.<db>``, outside the stream.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from pgpulse.log.change import Change

__all__ = [
    "END",
    "MSG_ID",
    "PREV",
    "Published",
    "body",
    "change_of",
    "notices",
    "stream_name",
    "subject",
    "subjects",
]

MSG_ID = "Nats-Msg-Id"
PREV = "Pgpulse-Prev"
END = "Pgpulse-End"
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


def notices(database: str) -> str:
    """The core subject of *database*'s notices (not in the stream)."""
    return f"pgpulse.{_token(database)}"


def subject(database: str, table: str) -> str:
    """``pgpulse.<db>.<schema>.<table>`` for ``schema.table``."""
    schema, _, name = table.partition(".")
    return f"pgpulse.{_token(database)}.{_token(schema)}.{_token(name)}"


def body(change: Change) -> bytes:
    """The change as JSON; the rows as PostgreSQL's JSON text, in strings."""
    return orjson.dumps(
        {
            "id": change.id,
            "event_id": change.event_id,
            "xid": change.xid,
            "table": change.table,
            "op": change.op,
            "pk": change.pk,
            "row": change.row,
            "old": change.old,
            "ts": change.ts,
        }
    )


def change_of(data: bytes, name_of: Callable[[str], str]) -> Change:
    """A message body back into the :class:`Change` the relay read."""
    doc = orjson.loads(data)
    return Change(
        id=doc["id"],
        xid=doc["xid"],
        table=doc["table"],
        name=name_of(doc["table"]),
        op=doc["op"],
        pk=doc["pk"],
        row=doc["row"],
        old=doc["old"],
        ts=doc["ts"],
        event_id=doc["event_id"],
    )


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
        row = doc["row"]
        return cls(
            doc["id"],
            doc["event_id"],
            doc["table"],
            doc["op"],
            orjson.loads(doc["pk"]),
            None if row is None else orjson.loads(row),
            seq,
        )
