"""The engine's step-cost model is measured from its own steps unless the caller supplies one."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from suffixspec import Engine, RequestParams
from suffixspec.engine.step_cost import MeasuredStepCost
from tiny_models import random_prompts, tiny_model

PLACEHOLDER_1 = 0.0101  # the scheduler's placeholder for a 1-token step (10 ms + 0.1 ms)


def test_fit_is_the_median_per_power_of_two_group_made_non_decreasing() -> None:
    cost = MeasuredStepCost(refit_every=1000, skip=0)
    rng = np.random.default_rng(0)
    for _ in range(9):
        cost.record(1, 0.002 + rng.uniform(-1e-4, 1e-4))
        cost.record(5, 0.004)  # group [4, 8)
        cost.record(6, 0.004)
        cost.record(40, 0.003)  # noisy: cheaper than a smaller group; raised to 0.004
    cost.record(300, 5.0)  # a lone outlier group: too few steps to be a point
    points = cost.fit()
    assert points is not None
    assert [t for t, _ in points] == [1, 5, 40]
    assert abs(points[0][1] - 0.002) < 1e-4
    assert points[1][1] == points[2][1] == 0.004


def test_refits_come_every_refit_every_steps_after_the_warm_up_steps() -> None:
    cost = MeasuredStepCost(refit_every=4, skip=2, min_per_group=1)
    answers = [cost.record(8, 0.01) for _ in range(2 + 8)]
    assert answers[:2] == [None, None]  # warm-up steps are not measured
    fitted = [i for i, a in enumerate(answers) if a is not None]
    assert fitted == [5, 9] and answers[5] == [(8, 0.01)]
    assert cost.record(0, 1.0) is None and cost.record(8, float("nan")) is None  # ignored


def test_engine_without_cost_points_plans_with_its_measured_steps() -> None:
    model = tiny_model("LlamaForCausalLM")
    engine = Engine(model, num_blocks=64, block_size=16)
    assert engine.scheduler.step_time(1) == pytest.approx(PLACEHOLDER_1)
    engine.generate(random_prompts([5, 9, 7, 12], seed=1), RequestParams(max_new_tokens=48))
    assert engine.step_cost is not None and engine.step_cost.points is not None
    measured = dict(engine.step_cost.points)
    tokens = min(measured)
    # The scheduler now plans with the measured model, not the placeholder.
    assert engine.scheduler.step_time(tokens) == pytest.approx(measured[tokens])
    assert engine.scheduler.step_time(tokens) != pytest.approx(PLACEHOLDER_1, rel=1e-3)


def test_supplied_cost_points_stay_fixed() -> None:
    model = tiny_model("LlamaForCausalLM")
    engine = Engine(model, num_blocks=64, block_size=16, cost_points=[(1, 0.5), (1024, 0.5)])
    engine.generate(random_prompts([5, 9, 7, 12], seed=1), RequestParams(max_new_tokens=48))
    assert engine.step_cost is None
    assert engine.scheduler.step_time(3) == pytest.approx(0.5)
