"""Prometheus metrics, safe across uvicorn workers (prometheus-client's multiprocess mode).

Each app gets its own registry (no global state). With `PROMETHEUS_MULTIPROC_DIR` set, which
`gateway serve --workers N` does, every worker writes its samples there and `/metrics` sums them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "Requests answered", ["route", "status", "backend"], registry=r
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time to the full answer (streams: to the last event)",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "Streams: time to the first event carrying generated output",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_backend_in_flight",
            "Requests in flight per backend",
            ["backend"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.healthy = Gauge(
            "gateway_backend_healthy",
            "1 when the backend is in rotation",
            ["backend"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.retries = Counter(
            "gateway_upstream_retries",
            "Attempts after a failure before any byte",
            ["backend"],
            registry=r,
        )
        self.spills = Counter(
            "gateway_spills", "Sessions sent past their saturated owner", ["backend"], registry=r
        )
        self.ejections = Counter(
            "gateway_backend_ejections", "Backends taken out of rotation", ["backend"], registry=r
        )
        self.context_length = Counter(
            "gateway_context_length_conversions",
            "vLLM context-length 400s turned into incomplete responses",
            ["route"],
            registry=r,
        )

    def backend_ejected(self, url: str) -> None:
        self.ejections.labels(url).inc()
        self.healthy.labels(url).set(0)

    def backend_readmitted(self, url: str) -> None:
        self.healthy.labels(url).set(1)

    def render(self) -> bytes:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
