"""Cache invalidation: Redis keys deleted or refreshed from a consumer group.

Why a consumer group and not a LISTEN callback: an invalidation lost while
Redis or the worker is down is a stale cache entry served until it expires.
As a group, every change is applied once Redis answers again (the batch is
retried, never acknowledged before Redis took it), and a restarted worker
continues where the group stopped.  Changes of one row arrive in commit
order, so a refreshed key always ends at the row's latest version.

Keys come from a template over the row's columns (``"doc:{id}"``,
``"tenant:{tenant_id}:doc:{id}"``), checked against the catalog when the
worker starts.  An UPDATE that changes a key column invalidates the old key
and the new one.  ``refresh=True`` writes the row's JSON (exactly as the log
has it) instead of deleting, and deletes on DELETE.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pgpulse.clients.stream import Event
from pgpulse.consumers.batch import Batch
from pgpulse.consumers.consumer import Consumer
from pgpulse.consumers.sinks import Deliver, SinkError, run_sink
from pgpulse.exceptions import PgPulseError
from pgpulse.log.change import Change

__all__ = ["KeyTemplate", "invalidate", "key_templates", "redis_sink"]

log = logging.getLogger("pgpulse.consumers.cache")


@dataclass(frozen=True)
class KeyTemplate:
    """A cache key built from a row: ``"doc:{id}"``."""

    template: str
    fields: tuple[str, ...]

    @classmethod
    def parse(cls, template: str) -> KeyTemplate:
        fields: list[str] = []
        try:
            for _, field, spec, conversion in string.Formatter().parse(template):
                if field is None:
                    continue
                if not field or not field.isidentifier() or spec or conversion:
                    raise PgPulseError(
                        f"cache key template {template!r}: {{{field}}} is not a "
                        "column name; write columns as {column}, e.g. 'doc:{id}'"
                    )
                fields.append(field)
        except ValueError as exc:
            raise PgPulseError(
                f"cache key template {template!r}: {exc}; write columns as "
                "{column}, e.g. 'doc:{id}' (a literal brace is {{ or }})"
            ) from None
        if not fields:
            raise PgPulseError(
                f"cache key template {template!r} names no column; every row "
                "would share one key (write e.g. 'doc:{id}')"
            )
        return cls(template, tuple(fields))

    def key(self, row: Mapping[str, Any] | None) -> str | None:
        """The key of *row*, or None when a column is missing or NULL."""
        if row is None:
            return None
        values: dict[str, str] = {}
        for field in self.fields:
            value = row.get(field)
            if value is None:
                return None
            values[field] = value if isinstance(value, str) else _text(value)
        return self.template.format(**values)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def key_templates(
    worker: Consumer, key: str | Mapping[str, str]
) -> dict[str, KeyTemplate]:
    """One template per table of *worker*, checked against its columns."""
    if isinstance(key, str):
        wanted = dict.fromkeys(worker.table_names, key)
    else:
        wanted = {}
        for name, text in key.items():
            table = worker.catalog.table(name)
            wanted[worker.catalog.short_name(table.qualified)] = text
        missing = [t for t in worker.table_names if t not in wanted]
        if missing:
            raise PgPulseError(
                f"no cache key template for table {', '.join(missing)}; "
                "give one per table of the group"
            )
    templates: dict[str, KeyTemplate] = {}
    for name, text in wanted.items():
        template = KeyTemplate.parse(text)
        table = worker.catalog.table(name)
        for field in template.fields:
            table.column(field)  # raises naming the table and its columns
        templates[name] = template
    return templates


def redis_sink(
    redis: Any,
    templates: Mapping[str, KeyTemplate],
    *,
    refresh: bool = False,
    ttl: float | None = None,
) -> Deliver:
    """Apply each batch to *redis* (a ``redis.asyncio.Redis``) in one
    MULTI/EXEC: DEL the keys of the changed rows, or with *refresh* SET them
    to the new row's JSON (*ttl* seconds, if given) and DEL deleted rows."""
    from redis.exceptions import RedisError

    expire_ms = None if ttl is None else max(1, int(ttl * 1000))

    async def deliver(batch: Batch) -> None:
        if batch.reset:
            log.error(
                "consumer group %s was reset (%s): changes were pruned before "
                "they were applied, so the cache may hold stale entries; flush "
                "it or let entries expire",
                batch.group,
                batch.reset,
            )
            return
        pipe = redis.pipeline(transaction=True)
        commands = 0
        # The batch's events carry the rows already parsed (exact numbers);
        # the raw changes, the row's JSON text as logged (for --refresh).
        for change, event in zip(batch.raw, batch.changes, strict=True):
            template = templates[change.name]
            commands += _apply(pipe, template, change, event, refresh, expire_ms)
        if not commands:
            return
        try:
            await pipe.execute()
        except RedisError as exc:
            raise SinkError(f"redis: {type(exc).__name__}: {exc}") from None

    return deliver


def _apply(
    pipe: Any,
    template: KeyTemplate,
    change: Change,
    event: Event,
    refresh: bool,
    px: int | None,
) -> int:
    """Queue the commands of one change; returns how many."""
    new_key = template.key(event.row)
    old_key = template.key(event.old) or (
        template.key(event.pk) if change.op == "DELETE" else None
    )
    commands = 0
    if old_key is not None and old_key != new_key:
        pipe.delete(old_key)
        commands += 1
    if new_key is not None:
        if refresh and change.row is not None:
            pipe.set(new_key, change.row.encode(), px=px)
        else:
            pipe.delete(new_key)
        commands += 1
    return commands


async def invalidate(
    worker: Consumer,
    redis: Any,
    key: str | Mapping[str, str],
    *,
    refresh: bool = False,
    ttl: float | None = None,
    backoff_max: float = 10.0,
) -> None:
    """Keep *redis* consistent with the tables of *worker*, forever::

        async with pgpulse.consumer(url, group="doc-cache",
                                    tables=["documents"]) as worker:
            await invalidate(worker, redis, key="doc:{id}")

    *key* is one template, or one per table (``{"documents": "doc:{id}"}``).
    While Redis is down the batch is retried (capped back-off), never dropped
    and never dead-lettered: the cache is only as fresh as its last batch.
    """
    templates = key_templates(worker, key)
    log.info(
        "consumer group %s keeps Redis keys %s %s",
        worker.group,
        ", ".join(t.template for t in templates.values()),
        "refreshed" if refresh else "invalidated",
    )
    await run_sink(
        worker,
        redis_sink(redis, templates, refresh=refresh, ttl=ttl),
        max_attempts=None,
        backoff_max=backoff_max,
    )
