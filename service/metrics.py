"""Prometheus metrics of one app: HTTP traffic, fits and iterations, the job queue and workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """Its own registry per app, so several apps in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "em_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "em_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fits = Counter(
            "em_fits", "Fits (jobs) finished, by model and outcome", ["model", "outcome"], registry=self.registry
        )
        self.iterations = Counter("em_iterations", "EM iterations run, by model", ["model"], registry=self.registry)
        self.queue_depth = Gauge("em_queue_depth", "Jobs waiting for a worker", registry=self.registry)
        self.busy_workers = Gauge("em_busy_workers", "Workers running a fit", registry=self.registry)
        self.workers = Gauge("em_workers", "Worker processes", registry=self.registry)
        self.store_bytes = Gauge("em_store_bytes", "Bytes of live pages in the job store", registry=self.registry)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once: labels() takes a lock and checks its arguments on every
        call, a few microseconds a request. Label values are bounded (route templates, methods, statuses, kinds)."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._child(self.requests, route, method, str(status)).inc()
        self._child(self.latency, route, method).observe(seconds)

    def watch_jobs(self, stats: Callable[[], dict[str, int]], store_bytes: Callable[[], int]) -> None:
        """Queue, worker and store gauges are read from the job manager at scrape time."""
        self.store_bytes.set_function(store_bytes)
        self.queue_depth.set_function(lambda: stats().get("queued", 0))
        self.busy_workers.set_function(lambda: stats().get("busy_workers", 0))
        self.workers.set_function(lambda: stats().get("workers", 0))

    # The job manager's observer hooks.
    def job_finished(self, kind: str, status: str) -> None:
        self._child(self.fits, kind, status).inc()

    def iterations_run(self, kind: str, count: int) -> None:
        self._child(self.iterations, kind).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
