"""The engine's step-cost model, measured from its own steps.

The scheduler chooses each step's verify budget from a model of step time against tokens fed
(``Scheduler.set_cost_model``). A caller that knows its machine passes ``cost_points``; otherwise
the engine times its real steps (everything a step does: drafting, scheduling, the forward pass,
verification) and refits the model every ``refit_every`` measured steps, so the budget follows the
hardware it actually runs on instead of a placeholder. Until enough steps are measured the
scheduler's placeholder (10 ms + 0.1 ms per token) stands.

The fit is robust and cheap: steps are grouped by token count in powers of two, each group's
median (of the last ``window`` steps) is a point, and times are made non-decreasing in tokens
(noise can invert neighbouring groups; a step with more tokens never costs less).
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["MeasuredStepCost"]


class MeasuredStepCost:
    """Step times as the engine runs; :meth:`record` returns new cost points when it is time to
    refit, else None."""

    def __init__(self, refit_every: int = 32, window: int = 2048, min_per_group: int = 3, skip: int = 2):
        self.refit_every = refit_every
        self.min_per_group = min_per_group
        self._skip = skip  # the first steps pay one-time costs (allocation, kernel selection)
        self._samples: deque[tuple[int, float]] = deque(maxlen=window)
        self._since_fit = 0
        self.points: list[tuple[int, float]] | None = None  # the last fitted model

    def record(self, tokens: int, seconds: float) -> list[tuple[int, float]] | None:
        if self._skip > 0:
            self._skip -= 1
            return None
        if tokens <= 0 or not np.isfinite(seconds) or seconds < 0:
            return None
        self._samples.append((tokens, seconds))
        self._since_fit += 1
        if self._since_fit < self.refit_every:
            return None
        self._since_fit = 0
        points = self.fit()
        if points is not None:
            self.points = points
        return points

    def fit(self) -> list[tuple[int, float]] | None:
        """The cost points of the recorded steps, or None while no group has enough steps."""
        if not self._samples:
            return None
        tokens = np.fromiter((t for t, _ in self._samples), dtype=np.int64)
        seconds = np.fromiter((s for _, s in self._samples), dtype=np.float64)
        groups = np.floor(np.log2(tokens)).astype(np.int64)
        points = []
        for g in np.unique(groups):
            members = groups == g
            if members.sum() >= self.min_per_group:
                points.append((int(np.median(tokens[members])), float(np.median(seconds[members]))))
        if not points:
            return None
        monotone, top = [], 0.0
        for t, s in points:  # groups are in increasing token order, medians distinct across groups
            top = max(top, s)
            monotone.append((t, top))
        return monotone
