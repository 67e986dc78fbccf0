"""Shared test setup.

- `oracle` tests compare against torch/diffusers/transformers live. They are deselected by the
  default command (`-m "not oracle"`); under `pytest -m oracle` a missing oracle package is an
  error, not a skip (CI sets MINRIFF_REQUIRE_ORACLE=1), so the comparison can never vanish quietly.
- `shared` data (../shared/reference) is optional: tests that use it skip with a reason when absent.
- Helpers tests import (paths, `oracle`, `fixture_script`, `rel_err`, case builders) live in
  tests/support/ (on the path through pyproject's `pythonpath`).
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
# CI is a gate, not a search: it draws the same examples every run (.ci/run sets HYPOTHESIS_PROFILE=ci),
# so a red run is reproducible and a rare float32 corner cannot flip a landed commit. Local runs keep
# drawing new examples; whatever they find goes into an @example.
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module")
def serial_numba():
    """Tiny models are dominated by thread start-up on a small shared machine (4x slower here with
    2 loaded cores): run a module's kernels on one thread; results do not depend on the count.
    Use with `pytestmark = pytest.mark.usefixtures("serial_numba")`."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)
