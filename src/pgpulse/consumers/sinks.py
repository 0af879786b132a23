"""Sinks: a consumer group's batches handed to a command or a webhook.

Why in pgpulse: "run this when an order is paid" and "POST every change to
that service" are what most workers are, and each needs the same care: one
JSON document per change with exact numbers, retries with capped back-off, a
dead-letter table after the last attempt (the group moves on, nothing is
dropped), and acknowledging only after success.

The JSON of a change is spliced from the log's own text (never parsed and
printed again, so a ``numeric`` keeps every digit)::

    {"id": 1207, "cursor": "...", "table": "orders", "op": "UPDATE",
     "pk": {"id": 7}, "row": {...}, "old": {...}, "ts": "2026-12-04T..."}

``id`` is the change's number in the log, the same in every delivery:
receivers deduplicate by it.  Webhooks are signed: header
``Pgpulse-Signature: t=TIMESTAMP,v1=HEX`` where HEX is the HMAC-SHA256 of
``TIMESTAMP.BODY`` with the secret (:func:`verify` checks one).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import orjson

from pgpulse.backoff import Backoff
from pgpulse.consumers.batch import Batch
from pgpulse.consumers.consumer import Consumer
from pgpulse.log.change import Change

__all__ = [
    "SinkError",
    "SinkStats",
    "change_json",
    "exec_sink",
    "run_sink",
    "sign",
    "verify",
    "webhook_sink",
]

log = logging.getLogger("pgpulse.consumers.sinks")

SIGNATURE_HEADER = "Pgpulse-Signature"


class SinkError(Exception):
    """A delivery failed (it is retried, then dead-lettered)."""


def change_json(change: Change) -> bytes:
    """One change as JSON, its row text spliced in as the log has it."""
    return b"".join(
        [
            b'{"id":%d,"cursor":' % change.id,
            orjson.dumps(change.event_id),
            b',"table":',
            orjson.dumps(change.name),
            b',"op":',
            orjson.dumps(change.op),
            b',"pk":',
            (change.pk or "null").encode(),
            b',"row":',
            (change.row or "null").encode(),
            b',"old":',
            (change.old or "null").encode(),
            b',"ts":',
            (change.ts or "null").encode(),
            b"}",
        ]
    )


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header's value for *body*."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance: float = 300.0) -> bool:
    """Whether *header* signs *body* with *secret*, made within *tolerance*
    seconds (for receivers; constant-time comparison)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        t = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


Deliver = Callable[[Batch], Awaitable[None]]


@dataclass
class SinkStats:
    batches: int = 0
    changes: int = 0
    failures: int = 0
    dead_letters: int = 0
    resets: int = 0


async def run_sink(
    worker: Consumer,
    deliver: Deliver,
    *,
    max_attempts: int | None = 8,
    backoff_max: float = 30.0,
    on_progress: Callable[[SinkStats], None] | None = None,
) -> None:
    """Deliver every batch of *worker* with *deliver*, acknowledging after
    success; after *max_attempts* failures the batch goes to the dead letters
    (None: retried until it succeeds, for sinks whose failures are outages
    rather than bad changes)."""
    stats = SinkStats()
    async for batch in worker:
        if batch.reset:
            stats.resets += 1
            log.error("consumer group %s was reset: %s", worker.group, batch.reset)
        backoff = Backoff(initial=0.25, maximum=backoff_max)
        attempt = 0
        while True:
            attempt += 1
            try:
                await deliver(batch)
            except SinkError as exc:
                stats.failures += 1
                if max_attempts is not None and attempt >= max_attempts:
                    log.error(
                        "consumer group %s: %d changes (first %s of %s) failed %d "
                        "times, last: %s; kept as dead letters",
                        worker.group,
                        len(batch.raw),
                        batch.raw[0].id if batch.raw else "-",
                        batch.raw[0].table if batch.raw else "-",
                        attempt,
                        exc,
                    )
                    if batch.raw:
                        await batch.reject(str(exc), attempt)
                        stats.dead_letters += len(batch.raw)
                    break
                delay = backoff.next()
                log.warning(
                    "consumer group %s: delivery failed (%s); attempt %d%s in %.1fs",
                    worker.group,
                    exc,
                    attempt + 1,
                    "" if max_attempts is None else f" of {max_attempts}",
                    delay,
                )
                if on_progress is not None:
                    on_progress(stats)
                await asyncio.sleep(delay)
                continue
            if batch.reset or await batch.ack():
                stats.batches += 1
                stats.changes += len(batch.raw)
            break
        if on_progress is not None:
            on_progress(stats)


def exec_sink(command: list[str], timeout: float = 60.0) -> Deliver:
    """Run *command* per batch, one JSON line per change on its stdin (a
    reset: ``{"reset": REASON}``); success is exit status 0."""

    async def deliver(batch: Batch) -> None:
        if batch.reset:
            lines = orjson.dumps({"reset": batch.reset}) + b"\n"
        else:
            lines = b"".join(change_json(c) + b"\n" for c in batch.raw)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=None,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise SinkError(f"cannot run {command[0]!r}: {exc}") from None
        try:
            async with asyncio.timeout(timeout):
                _, stderr = await proc.communicate(lines)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SinkError(f"{command[0]!r} ran longer than {timeout:g} s") from None
        if proc.returncode != 0:
            tail = stderr.decode(errors="replace").strip()[-300:]
            raise SinkError(
                f"{command[0]!r} exited with status {proc.returncode}"
                + (f": {tail}" if tail else "")
            )

    return deliver


def webhook_sink(
    url: str,
    secret: str,
    *,
    timeout: float = 10.0,
    client: httpx.AsyncClient | None = None,
) -> Deliver:
    """POST each batch to *url* as ``{"group", "changes": [...]}`` (or
    ``{"group", "reset"}``), signed; success is a 2xx status."""
    http = client or httpx.AsyncClient(timeout=timeout)

    async def deliver(batch: Batch) -> None:
        group = orjson.dumps(batch.group)
        if batch.reset:
            body = b'{"group":%b,"reset":%b}' % (group, orjson.dumps(batch.reset))
        else:
            changes = b",".join(change_json(c) for c in batch.raw)
            body = b'{"group":%b,"changes":[%b]}' % (group, changes)
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(secret, body),
        }
        try:
            response = await http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SinkError(f"POST {url}: {type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            raise SinkError(
                f"POST {url}: HTTP {response.status_code} {response.text[:200]!r}"
            )

    return deliver
