"""What ``/metrics`` reports, in the Prometheus text format.

One registry per process (not prometheus-client's global one), so several
managers in one test process never share counters. Model gauges are read
when scraped, from the backend's own statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from llm.scheduler import SchedulerStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A *_created series per counter doubles the output and tells an operator nothing.
disable_created_metrics()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "deskmate_events",
            "Inbound events by platform and outcome (received, answered, failed, duplicate)",
            ["platform", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "deskmate_answer_seconds",
            "Seconds from accepting a message to its stored answer",
            ["platform"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
            registry=self.registry,
        )
        self.tokens = Counter(
            "deskmate_tokens",
            "Model tokens, prompt and completion",
            ["kind"],
            registry=self.registry,
        )
        self.handoffs = Counter(
            "deskmate_handoffs",
            "Tickets opened for the support team, by trigger",
            ["trigger"],
            registry=self.registry,
        )
        self.guarded = Counter(
            "deskmate_guarded_answers",
            "Model answers withheld by the output guard, by reason",
            ["reason"],
            registry=self.registry,
        )

    def watch_model(self, stats: Callable[[], SchedulerStats | None]) -> None:
        """Report the local model's queue and batch when scraped."""
        self.registry.register(_ModelCollector(stats))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ModelCollector(Collector):
    def __init__(self, stats: Callable[[], SchedulerStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats()
        if stats is None:
            return
        yield GaugeMetricFamily(
            "deskmate_model_queue_depth", "Requests waiting for a batch slot", value=stats.waiting
        )
        yield GaugeMetricFamily(
            "deskmate_model_batch_size", "Sequences decoding together now", value=stats.running
        )
