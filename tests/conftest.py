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
