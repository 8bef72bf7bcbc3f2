"""Shared pytest configuration: a hypothesis profile suited to a loaded CI box."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# Detailed assertion messages inside the shared reference helpers too.
pytest.register_assert_rewrite("reference_suffix")

# No per-example deadline: timings on a shared 2-core machine are noise, and speed targets live in
# benches/. Another registered profile can be selected with HYPOTHESIS_PROFILE.
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The test models are tiny: one torch thread is fastest (and leaves the other core to the rest
# of a loaded CI machine). torch is optional: the cache and tree tests run without it.
try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", help="also run the tests marked slow (full sweeps)")


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (full sweeps; CI runs bounded samples of them) need `--full`."""
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="slow: a full sweep, run with --full")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
