"""Figures of a replay: tokens per step, acceptance, proposal cost, memory, implied speedup."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from suffixspec.errors import InvalidParameterError
from suffixspec.replay.engine import ReplayResult

__all__ = ["VerifyCost", "summarize"]


@dataclass(frozen=True)
class VerifyCost:
    """Cost of one verification step over ``k`` draft tokens, relative to one plain decode step.

    Piecewise linear through ``points`` ``(k, cost)`` (sorted by k), extended beyond the last
    point along the last segment. ``decode_ms``, if given, is the time of one decode step: the
    measured proposal time is then added to each step's cost.
    """

    points: tuple[tuple[float, float], ...]
    spec: str
    decode_ms: float | None = None

    @staticmethod
    def parse(spec: str, decode_ms: float | None = None) -> VerifyCost:
        """``linear:A`` (cost(k) = 1 + A*k) or ``table:K=C,K=C,...`` (measured costs, e.g.
        ``table:0=1,16=1.08,64=1.4``; linear interpolation)."""
        kind, _, body = spec.partition(":")
        try:
            points: tuple[tuple[float, float], ...]
            if kind == "linear":
                slope = float(body)
                points = ((0.0, 1.0), (1.0, 1.0 + slope))
            elif kind == "table":
                pairs = [item.split("=") for item in body.split(",")]
                points = tuple(sorted((float(k), float(c)) for k, c in pairs))
                if len(points) < 2 or len({k for k, _ in points}) != len(points):
                    raise ValueError("needs at least two distinct k")
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except ValueError as e:
            raise InvalidParameterError(
                f"bad verify cost {spec!r} ({e}); use 'linear:A' or 'table:K=C,K=C,...'"
            ) from None
        if any(not np.isfinite(v) or v < 0 for point in points for v in point) or points[0][1] <= 0:
            raise InvalidParameterError(f"bad verify cost {spec!r}: costs must be positive and finite")
        if decode_ms is not None and not (np.isfinite(decode_ms) and decode_ms > 0):
            raise InvalidParameterError(f"decode time must be positive, got {decode_ms}")
        return VerifyCost(points, spec, decode_ms)

    def __call__(self, k: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Cost of verifying ``k`` draft tokens (vectorized)."""
        ks = np.array([p[0] for p in self.points])
        cs = np.array([p[1] for p in self.points])
        k = np.asarray(k, dtype=np.float64)
        cost = np.interp(k, ks, cs)
        slope = (cs[-1] - cs[-2]) / (ks[-1] - ks[-2])
        return np.where(k > ks[-1], cs[-1] + slope * (k - ks[-1]), cost)

    def speedup(self, result: ReplayResult) -> float:
        """Decode steps saved: output tokens / total cost of the speculative steps."""
        cost = self(result.drafted)
        if self.decode_ms is not None:
            cost = cost + result.propose_ns / (self.decode_ms * 1e6)
        total = float(cost.sum())
        return float(result.emitted.sum()) / total if total > 0 else 1.0


def _p99(values: npt.NDArray[np.floating]) -> float:
    return float(np.percentile(values, 99)) if values.size else 0.0


def _mean(values: npt.NDArray[np.floating]) -> float:
    return float(values.mean()) if values.size else 0.0


def summarize(result: ReplayResult, verify_cost: VerifyCost) -> dict[str, float | int | str]:
    """The report row of one method on one workload (times in microseconds)."""
    steps = len(result.emitted)
    tokens = int(result.emitted.sum())
    drafted = int(result.drafted.sum())
    accepted = int(result.accepted.sum())
    with_draft = result.drafted > 0
    per_token_us = result.propose_ns[with_draft] / result.drafted[with_draft] / 1e3
    return {
        "workload": result.workload,
        "method": result.method,
        "requests": len(result.request_steps),
        "output_tokens": tokens,
        "steps": steps,
        "tokens_per_step": tokens / steps if steps else 0.0,
        "acceptance_rate": accepted / drafted if drafted else 0.0,
        "mean_draft": drafted / steps if steps else 0.0,
        "mean_accepted": accepted / steps if steps else 0.0,
        "propose_us_mean": _mean(result.propose_ns / 1e3),
        "propose_us_p99": _p99(result.propose_ns / 1e3),
        "propose_us_per_token_mean": float(result.propose_ns.sum()) / 1e3 / drafted if drafted else 0.0,
        "propose_us_per_token_p99": _p99(per_token_us),
        "observe_us_per_token_mean": float(result.observe_ns.sum()) / 1e3 / tokens if tokens else 0.0,
        "observe_us_per_token_p99": _p99(result.observe_ns / 1e3 / np.maximum(result.emitted, 1)),
        "memory_bytes": result.memory_bytes,
        "cached_tokens": result.cached_tokens,
        "bytes_per_cached_token": result.memory_bytes / result.cached_tokens if result.cached_tokens else 0.0,
        "verify_cost": verify_cost.spec,
        "speedup": verify_cost.speedup(result),
    }
