"""The server's Prometheus metrics (``GET /metrics``).

Built on ``prometheus_client`` (no dependencies of its own) rather than hand-written text: it
owns the exposition format's escaping, cumulative histogram buckets and ``_created`` samples, and
the tests parse the output with its parser. Each server has its own registry, so several apps in
one process (tests) never share counters.

Engine gauges (queue depth, running, KV blocks) are read at scrape time, between steps; per-step
and per-request figures are recorded as steps and requests end.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from suffixspec.engine.params import RequestOutput

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TOKEN_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "suffixspec_requests",
            "Requests by outcome: a finish reason (stop, length, abort, error) or refused "
            "(invalid: 4xx, queue_full: 429)",
            ["outcome"],
            registry=r,
        )
        self.waiting = Gauge("suffixspec_requests_waiting", "Requests waiting for admission", registry=r)
        self.preempted = Gauge(
            "suffixspec_requests_preempted", "Requests preempted, waiting to resume", registry=r
        )
        self.running = Gauge("suffixspec_requests_running", "Requests admitted and running", registry=r)
        self.kv_blocks_used = Gauge("suffixspec_kv_blocks_used", "KV cache blocks in use", registry=r)
        self.kv_blocks_total = Gauge("suffixspec_kv_blocks_total", "KV cache blocks in the pool", registry=r)
        self.steps = Counter("suffixspec_engine_steps", "Engine steps run", registry=r)
        self.step_tokens = Histogram(
            "suffixspec_step_tokens", "Tokens emitted per engine step", buckets=_TOKEN_BUCKETS, registry=r
        )
        self.step_seconds = Histogram(
            "suffixspec_step_seconds", "Duration of an engine step", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.generated_tokens = Counter("suffixspec_generated_tokens", "Tokens generated", registry=r)
        self.prompt_tokens = Counter(
            "suffixspec_prompt_tokens", "Prompt tokens of finished requests", registry=r
        )
        self.ttft = Histogram(
            "suffixspec_time_to_first_token_seconds",
            "Time from arrival to the first output token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "suffixspec_time_per_output_token_seconds",
            "Mean time per output token after the first, per request",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.slo = Counter(
            "suffixspec_slo_requests",
            "Finished requests with an SLO, by whether they met every target (met, missed)",
            ["result"],
            registry=r,
        )
        for outcome in ("stop", "length", "abort", "error", "invalid", "queue_full"):
            self.requests.labels(outcome)
        for result in ("met", "missed"):
            self.slo.labels(result)

    def observe_step(self, outputs: list[RequestOutput], seconds: float) -> None:
        self.steps.inc()
        self.step_seconds.observe(seconds)
        tokens = sum(len(out.new_token_ids) for out in outputs)
        self.step_tokens.observe(tokens)
        self.generated_tokens.inc(tokens)

    def observe_refused(self, outcome: str) -> None:
        self.requests.labels(outcome).inc()

    def observe_finished(self, out: RequestOutput, slo: Any) -> None:
        """One ended request: its outcome, latencies and whether it met its SLO (``slo``: the
        request's :class:`~suffixspec.SLO` or None)."""
        self.requests.labels(out.finish_reason or "abort").inc()
        self.prompt_tokens.inc(len(out.prompt_token_ids))
        stats = out.stats
        ttft = stats.ttft_s
        if ttft is not None:
            self.ttft.observe(ttft)
        tpot = None
        n = len(out.token_ids)
        if n > 1 and stats.first_token_time is not None and stats.finish_time is not None:
            tpot = (stats.finish_time - stats.first_token_time) / (n - 1)
            self.tpot.observe(tpot)
        if slo is not None and out.finish_reason in ("stop", "length"):
            met = (slo.ttft_ms is None or (ttft is not None and ttft * 1e3 <= slo.ttft_ms)) and (
                slo.tpot_ms is None or tpot is None or tpot * 1e3 <= slo.tpot_ms
            )
            self.slo.labels("met" if met else "missed").inc()

    def set_engine_state(self, engine: Any) -> None:
        """Reads the engine's queues and KV pool (call between steps)."""
        scheduler = engine.scheduler
        self.waiting.set(len(scheduler.waiting))
        self.preempted.set(len(scheduler.preempted))
        self.running.set(len(scheduler.running))
        self.kv_blocks_total.set(scheduler.num_blocks)
        self.kv_blocks_used.set(scheduler.num_blocks - scheduler.num_free_blocks)

    def render(self) -> bytes:
        return generate_latest(self.registry)
