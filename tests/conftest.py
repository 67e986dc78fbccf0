"""Shared test setup.

- `oracle` tests compare against torch/diffusers/transformers live. They are deselected by the
  default command (`-m "not oracle"`); under `pytest -m oracle` a missing oracle package is an
  error, not a skip (CI sets MINRIFF_REQUIRE_ORACLE=1), so the comparison can never vanish quietly.
- `shared` data (../shared/reference) is optional: tests that use it skip with a reason when absent.
- Helpers tests import (paths, `oracle`, `fixture_script`, `rel_err`, case builders) live in
  tests/support/ (on the path through pyproject's `pythonpath`).
- No test may download weights or see the developer's caches: the whole session runs offline
  (MINRIFF_OFFLINE=1) with minriff's home and the Hugging Face home in a temporary folder and the
  Hugging Face variables cleared. First-run tests undo that per test, against a local fake Hub.
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


HUB_VARIABLES = ("HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE",
                 "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MINRIFF_WEIGHTS")


@pytest.fixture(scope="session", autouse=True)
def offline_and_isolated(tmp_path_factory):
    home = tmp_path_factory.mktemp("homes")
    mp = pytest.MonkeyPatch()
    for name in HUB_VARIABLES:
        mp.delenv(name, raising=False)
    mp.setenv("MINRIFF_OFFLINE", "1")
    mp.setenv("MINRIFF_HOME", str(home / "minriff"))
    mp.setenv("HF_HOME", str(home / "huggingface"))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> str:
    """A tiny random model file made by the CLI (`minriff init-random --config tiny`), shared read-only."""
    from minriff.cli import main

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    assert main(["init-random", "--config", "tiny", "-o", str(path)]) == 0
    return str(path)


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
