"""``/metrics``: the gateway's counters in Prometheus' text format.

Why a collector rather than metric objects updated on the hot path: the bus
counts deliveries in plain integers (one addition per batch, not a lock per
delivery); prometheus-client reads them when scraped.  One registry per
gateway, so several gateways in one process (tests, apps mounting two) do not
share numbers.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pgpulse.gateway import Gateway

__all__ = ["CONTENT_TYPE", "exposition"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

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


_registries: weakref.WeakKeyDictionary[Gateway, CollectorRegistry] = (
    weakref.WeakKeyDictionary()
)


def exposition(gateway: Gateway) -> bytes:
    """The metrics of *gateway*, in the text exposition format."""
    registry = _registries.get(gateway)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_GatewayCollector(gateway))
        _registries[gateway] = registry
    return bytes(generate_latest(registry))
