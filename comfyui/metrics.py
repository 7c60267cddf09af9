"""Prometheus metrics of the worker (prometheus-client), one registry per app."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_EXECUTION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """Counters fed by the request path, gauges read from live state at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "worker_http_requests",
            "HTTP requests answered, by endpoint (route template), method and status.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.prompts = Counter(
            "worker_prompts",
            "Prompts run through /prompt_sync, by outcome (success or the error code).",
            ["outcome"],
            registry=self.registry,
        )
        self.execution_seconds = Histogram(
            "worker_prompt_execution_seconds",
            "Execution time of successful prompts, as reported in execution_time.",
            buckets=_EXECUTION_BUCKETS,
            registry=self.registry,
        )

    def observe_prompt(self, outcome: str, execution_time: float | None) -> None:
        self.prompts.labels(outcome=outcome).inc()
        if execution_time is not None:
            self.execution_seconds.observe(execution_time)

    def observe_request(self, endpoint: str, method: str, status: int) -> None:
        self.requests.labels(endpoint=endpoint, method=method, status=str(status)).inc()

    def watch(self, read: Callable[[], LiveValues]) -> None:
        """Register the live values, read at each scrape."""
        self.registry.register(_LiveState(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class LiveValues:
    """The worker's state at one scrape."""

    queue_depth: int | None
    in_flight: int
    waiting: int
    reconnects: int
    connected: bool


class _LiveState(Collector):
    def __init__(self, read: Callable[[], LiveValues]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        live = self._read()
        depth = live.queue_depth
        yield GaugeMetricFamily(
            "worker_comfyui_queue_depth",
            "ComfyUI's queue_remaining (running + pending) as last reported.",
            value=float(depth if depth is not None else 0),
        )
        yield GaugeMetricFamily(
            "worker_inflight_requests",
            "/prompt_sync requests in flight.",
            value=float(live.in_flight),
        )
        yield GaugeMetricFamily(
            "worker_waiting_prompts", "Prompts tracked by waiters.", value=float(live.waiting)
        )
        yield GaugeMetricFamily(
            "worker_comfyui_websocket_connected",
            "1 while the websocket to ComfyUI is up.",
            value=1.0 if live.connected else 0.0,
        )
        yield CounterMetricFamily(
            "worker_comfyui_websocket_reconnects",
            "Times the websocket to ComfyUI dropped and was reconnected.",
            value=float(live.reconnects),
        )
