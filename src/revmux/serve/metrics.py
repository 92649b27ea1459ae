"""Prometheus metrics of one server (names and units as in docs/serving.md), in a registry of its own.

What it is: `ServeMetrics()` builds the revmux_* collectors in a fresh CollectorRegistry, so two
apps (or two tests) in one process never share counters; `render()` is the /metrics body. Labels
are only status codes and rejection reasons: nothing of a request's text ever becomes a label.
What it is not: a global registry, or a place that decides what to count (the engine and the
HTTP front call it).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
WIDTH_BUCKETS = (1, 2, 3, 4, 6, 8, 10, 16, 20, 40)
REJECT_REASONS = (
    "queue_full",
    "draining",
    "payload_too_large",
    "batch_too_large",
    "unauthorized",
    "invalid_input",
)


class ServeMetrics:
    """The revmux_* collectors of one server."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "revmux_requests", "HTTP /predict requests answered, by status code.", ["status"], registry=r
        )
        self.request_duration = Histogram(
            "revmux_request_duration_seconds",
            "Time from a /predict request's arrival to its answer.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_duration = Histogram(
            "revmux_queue_duration_seconds",
            "Time an input waited in the queue before its forward pass.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.inference_duration = Histogram(
            "revmux_inference_duration_seconds",
            "Wall time of one step (all forward passes of one launch).",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_size = Gauge("revmux_queue_size", "Inputs waiting in the queue.", registry=r)
        self.forward_batch_size = Histogram(
            "revmux_forward_batch_size", "Inputs per step.", buckets=BATCH_BUCKETS, registry=r
        )
        self.group_width = Histogram(
            "revmux_group_width",
            "Width N of each group run (1: unmultiplexed).",
            buckets=WIDTH_BUCKETS,
            registry=r,
        )
        self.fallback = Counter(
            "revmux_fallback", "Inputs re-run at N = 1 because their multiplexed margin was low.", registry=r
        )
        self.fallback_failed = Counter(
            "revmux_fallback_failed",
            "Low-margin inputs answered multiplexed (flagged) because their N = 1 re-run failed or was capped.",
            registry=r,
        )
        self.tenant_inputs = Counter(
            "revmux_tenant_inputs",
            "Inputs run, by tenant and group width N (tenants past the first 100 seen count as 'other').",
            ["tenant", "width"],
            registry=r,
        )
        self._tenants: set[str] = set()
        self.rejected = Counter(
            "revmux_rejected", "Requests refused before admission, by reason.", ["reason"], registry=r
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)

    def tenant_label(self, tenant: str | None, limit: int = 100) -> str:
        """The metrics label of a tenant: its name for the first `limit` tenants seen, then 'other'."""
        if tenant is None:
            return "none"
        if tenant in self._tenants or len(self._tenants) < limit:
            self._tenants.add(tenant)
            return tenant
        return "other"

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
