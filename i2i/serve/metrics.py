"""Prometheus metrics for `i2i serve`, in a registry of the app's own.

- `i2i_http_requests_total{method,route,status}` and
  `i2i_http_request_duration_seconds{method,route}` (route = the route's template,
  e.g. `/v1/related/{note_id}`, so ids never become labels);
- `i2i_embed_batch_size` and `i2i_embed_batch_duration_seconds` (one observation per
  forward pass), `i2i_embed_rejected_total` (requests refused with 503: queue full), `i2i_embed_queue_depth`;
- `i2i_collection_points` (read when scraped).

`RequestMetrics` is the ASGI middleware that records the HTTP metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from i2i.serve.guard import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The server's metrics; `middleware` records every HTTP request."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "i2i_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "i2i_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "i2i_embed_batch_size", "Notes per embedding forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "i2i_embed_batch_duration_seconds",
            "Time of one embedding forward pass",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "i2i_embed_rejected", "Requests refused with 503 because the embedding queue was full", registry=r
        )
        self.queue_depth = Gauge("i2i_embed_queue_depth", "Notes waiting to be embedded", registry=r)
        self.points = Gauge("i2i_collection_points", "Points in the collection", registry=r)

    def track(self, queue_depth: Callable[[], float], points: Callable[[], float]) -> None:
        """Read the queue depth and the collection size when scraped."""
        self.queue_depth.set_function(queue_depth)
        self.points.set_function(points)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: count and time each HTTP request by method, route and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - t0)
