"""``/metrics``: the gateway's counters in Prometheus' text format.

Why a collector rather than metric objects updated on the hot path: the bus
counts deliveries in plain integers (one addition per batch, not a lock per
delivery); prometheus-client reads them when scraped.  One registry per
gateway, so several gateways in one process (tests, apps mounting two) do not
share numbers.

Consumer groups are read from the database at scrape time (their workers
write their counters there), so every gateway shows every group; the read is
kept for a few seconds so that many scrapers cost one query.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pgpulse.consumers.stats import GroupStats, group_stats

if TYPE_CHECKING:
    from pgpulse.gateway import Gateway

__all__ = ["CONTENT_TYPE", "exposition"]

log = logging.getLogger("pgpulse.server.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

GROUPS_TTL = 5.0
"""Seconds a read of the consumer groups' numbers serves scrapes."""


class _GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.groups: list[GroupStats] = []
        self.groups_read_at = -GROUPS_TTL
        self.groups_ok = True

    async def refresh_groups(self) -> None:
        if time.monotonic() - self.groups_read_at < GROUPS_TTL:
            return
        pool = self.gateway.pool
        if pool is None:
            return
        try:
            async with asyncio.timeout(5), pool.acquire() as conn:
                self.groups = await group_stats(conn)
            self.groups_ok = True
        except Exception as exc:  # the other metrics are still worth serving
            self.groups_ok = False
            log.warning("/metrics: consumer groups not read: %r", exc)
        self.groups_read_at = time.monotonic()

    def _group_metrics(self) -> Iterator[Metric]:
        families = [
            (
                GaugeMetricFamily,
                "pgpulse_consumer_lag_changes",
                "Changes of the group's tables after its oldest position.",
                "lag_changes",
            ),
            (
                GaugeMetricFamily,
                "pgpulse_consumer_lag_seconds",
                "Age of the oldest change the group has not acknowledged.",
                "lag_seconds",
            ),
            (
                CounterMetricFamily,
                "pgpulse_consumer_delivered",
                "Changes the group acknowledged (its throughput).",
                "delivered",
            ),
            (
                CounterMetricFamily,
                "pgpulse_consumer_redelivered",
                "Changes handed out again because their batch was not acknowledged.",
                "redelivered",
            ),
            (
                CounterMetricFamily,
                "pgpulse_consumer_takeovers",
                "Partitions taken over from a worker whose lease ran out.",
                "takeovers",
            ),
            (
                CounterMetricFamily,
                "pgpulse_consumer_resets",
                "Times pruning reset the group (it lagged past its max_lag).",
                "resets",
            ),
            (
                GaugeMetricFamily,
                "pgpulse_consumer_dead_letters",
                "Changes kept as dead letters (retry: pgpulse consumers retry).",
                "dead_letters",
            ),
            (
                GaugeMetricFamily,
                "pgpulse_consumer_workers",
                "Live workers of the group.",
                "workers",
            ),
        ]
        for kind, name, text, value in families:
            family = kind(name, text, labels=["group"])
            for group in self.groups:
                family.add_metric([group.name], float(getattr(group, value)))
            yield family
        yield GaugeMetricFamily(
            "pgpulse_consumer_stats_up",
            "1 if the consumer groups' numbers were read at the last attempt.",
            value=int(self.groups_ok),
        )

    def collect(self) -> Iterator[Metric]:
        gateway = self.gateway
        bus = gateway.bus
        listener = gateway.listener
        yield GaugeMetricFamily(
            "pgpulse_clients",
            "Connected clients (SSE and WebSocket).",
            value=len(bus.subscribers),
        )
        yield CounterMetricFamily(
            "pgpulse_changes",
            "Changes read from the log and routed.",
            value=bus.changes,
        )
        yield CounterMetricFamily(
            "pgpulse_deliveries",
            "Changes delivered to clients (change x client).",
            value=bus.delivered,
        )
        yield CounterMetricFamily(
            "pgpulse_filter_errors",
            "Rows skipped for a subscriber whose filter could not evaluate them.",
            value=bus.errors.total,
        )
        yield CounterMetricFamily(
            "pgpulse_filter_statements",
            "Statements run to evaluate filters and row-level security on "
            "streamed batches (one per table, batch and role+claims group).",
            value=bus.filter_statements,
        )
        resumes = CounterMetricFamily(
            "pgpulse_resumes",
            "Clients resumed from a last event id, by where their missed "
            "changes were read: the broker's stream or the change log.",
            labels=["source"],
        )
        for source, count in gateway.resumes.items():
            resumes.add_metric([source], float(count))
        yield resumes
        yield CounterMetricFamily(
            "pgpulse_listener_reads",
            "Reads of the change log by the listener.",
            value=listener.reads,
        )
        yield GaugeMetricFamily(
            "pgpulse_listener_connected",
            "1 while the listener is connected.",
            value=int(listener.connected.is_set()),
        )
        yield GaugeMetricFamily(
            "pgpulse_listener_polling",
            "1 while the listener polls (writers skip NOTIFY), 0 on wake-ups.",
            value=int(listener.polling),
        )
        live = gateway.live.stats()
        yield GaugeMetricFamily(
            "pgpulse_live_queries",
            "Distinct live queries held (clients of one query share it).",
            value=live["queries"],
        )
        yield GaugeMetricFamily(
            "pgpulse_live_clients",
            "Clients of live queries.",
            value=live["clients"],
        )
        yield CounterMetricFamily(
            "pgpulse_live_refreshes",
            "Reads of live queries (the first and one per batch that can "
            "change one), however many clients share them.",
            value=live["refreshes"],
        )
        yield CounterMetricFamily(
            "pgpulse_live_skipped",
            "Changes to a live query's table dropped without a read (neither "
            "row passes its filters).",
            value=live["skipped"],
        )
        yield from self._group_metrics()


_registries: weakref.WeakKeyDictionary[Gateway, CollectorRegistry] = (
    weakref.WeakKeyDictionary()
)


_collectors: weakref.WeakKeyDictionary[Gateway, _GatewayCollector] = (
    weakref.WeakKeyDictionary()
)


async def exposition(gateway: Gateway) -> bytes:
    """The metrics of *gateway*, in the text exposition format."""
    registry = _registries.get(gateway)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        collector = _GatewayCollector(gateway)
        registry.register(collector)
        _registries[gateway] = registry
        _collectors[gateway] = collector
    await _collectors[gateway].refresh_groups()
    return bytes(generate_latest(registry))
