"""Shared test setup.

- `oracle` tests compare against torch/diffusers/transformers live. They are deselected by the
  default command (`-m "not oracle"`); under `pytest -m oracle` a missing oracle package is an
  error, not a skip (CI sets MINRIFF_REQUIRE_ORACLE=1), so the comparison can never vanish quietly.
- `shared` data (../shared/reference) is optional: tests that use it skip with a reason when absent.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED = Path(os.environ.get("MINRIFF_SHARED", ROOT.parent / "shared"))
REFERENCE = SHARED / "reference"

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
# CI is a gate, not a search: it draws the same examples every run (.ci/run sets HYPOTHESIS_PROFILE=ci),
# so a red run is reproducible and a rare float32 corner cannot flip a landed commit. Local runs keep
# drawing new examples; whatever they find goes into an @example.
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def oracle(module: str):
    """Import an oracle package (torch, diffusers, transformers, librosa) for a live comparison."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get("MINRIFF_REQUIRE_ORACLE") == "1":
            pytest.fail(f"oracle package {module!r} is required (MINRIFF_REQUIRE_ORACLE=1) but missing: {e}")
        pytest.skip(f"oracle package {module!r} not installed")


def fixture_script(name: str):
    """Import tests/fixtures/<name>.py (the oracle script that made a fixture area) as a module:
    tests reuse its case lists and, under `-m oracle`, its live runs. Its torch imports are lazy."""
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_file(*parts: str) -> Path:
    p = REFERENCE.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared reference data absent: {p}")
    return p


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
