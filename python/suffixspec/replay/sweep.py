"""Parameter sweeps of one method on one trace, and the recommendation of the best settings.

The objective is the speedup implied by the verify-cost model (tokens per step alone always
favours drafting more, which verification pays for).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from suffixspec.config import SpecConfig
from suffixspec.errors import InvalidParameterError
from suffixspec.replay.engine import replay
from suffixspec.replay.methods import make_method
from suffixspec.replay.metrics import VerifyCost, summarize
from suffixspec.replay.tokenize import TokenizedTrace

__all__ = ["SWEEP_GRID", "Evaluator", "Recommendation", "recommend", "sweep"]

#: Values tried for each swept parameter.
SWEEP_GRID: dict[str, tuple[float, ...]] = {
    "max_depth": (16, 32, 64, 128),
    "max_spec_factor": (0.5, 1.0, 2.0, 4.0),
    "min_token_prob": (0.0, 0.05, 0.1, 0.2, 0.4),
}

Summary = dict[str, Any]


@dataclass
class Evaluator:
    """Replays ``trace`` with ``method`` at given settings, remembering each result."""

    trace: TokenizedTrace
    method: str
    verify_cost: VerifyCost
    warmup: TokenizedTrace | None = None
    progress: bool = False
    runs: dict[SpecConfig, Summary] = field(default_factory=dict)

    def __call__(self, params: SpecConfig) -> Summary:
        if params not in self.runs:
            result = replay(self.trace, make_method(self.method, params), self.warmup, self.progress)
            self.runs[params] = summarize(result, self.verify_cost)
        return self.runs[params]


def _set(params: SpecConfig, name: str, value: float) -> SpecConfig:
    return params.replace(**{name: int(value) if name == "max_depth" else float(value)})


def _check_grid(grid: Mapping[str, Sequence[float]]) -> None:
    for name, values in grid.items():
        if name not in SpecConfig.__dataclass_fields__ or not values:
            raise InvalidParameterError(f"cannot sweep {name!r} (or no values given)")


def sweep(
    evaluate: Evaluator, base: SpecConfig, grid: Mapping[str, Sequence[float]] = SWEEP_GRID
) -> list[dict[str, Any]]:
    """One parameter at a time over its grid values, the others at ``base``. Returns one record
    per point: ``{"param", "value", "summary"}``."""
    _check_grid(grid)
    return [
        {"param": name, "value": value, "summary": evaluate(_set(base, name, value))}
        for name, values in grid.items()
        for value in values
    ]


@dataclass(frozen=True)
class Recommendation:
    """The best settings found, their report row, and the row at the starting settings."""

    params: SpecConfig
    summary: Summary
    baseline: Summary

    def to_json(self) -> dict[str, Any]:
        return {"params": asdict(self.params), "summary": self.summary, "baseline": self.baseline}


def _score(summary: Summary) -> tuple[float, float]:
    return (round(summary["speedup"], 6), summary["tokens_per_step"])


def recommend(
    evaluate: Evaluator,
    base: SpecConfig,
    grid: Mapping[str, Sequence[float]] = SWEEP_GRID,
    rounds: int = 2,
) -> Recommendation:
    """Coordinate ascent: each parameter in turn set to its best grid value (the others fixed at
    the best so far), for up to ``rounds`` passes or until nothing changes."""
    _check_grid(grid)
    best = base
    for _ in range(rounds):
        start = best
        for name, values in grid.items():
            candidates = [best] + [_set(best, name, v) for v in values]
            best = max(candidates, key=lambda p: _score(evaluate(p)))
        if best == start:
            break
    return Recommendation(best, evaluate(best), evaluate(base))
