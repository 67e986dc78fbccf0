"""What the tests share: paths, the oracle import rule, fixture scripts, one error measure.

- `oracle(pkg)`: import torch/diffusers/transformers/librosa for a live comparison. A missing
  package skips the test, except under MINRIFF_REQUIRE_ORACLE=1 (CI), where it fails: the
  comparison can never vanish quietly.
- `fixture_script(name)`: tests/fixtures/<name>.py (the oracle script that made a fixture area)
  as a module; tests reuse its case lists and, under `-m oracle`, its live runs.
- `shared_file(...)`: data from ../shared/reference, or a skip with the reason when absent.
- `rel_err(got, ref)`: max |got - ref| / max |ref|, the measure the model tests state bounds in.
- `fakehub.FakeHub`: a local stand-in for the Hugging Face Hub serving the tiny diffusers fixture
  (download and first-run tests).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED = Path(os.environ.get("MINRIFF_SHARED", ROOT.parent / "shared"))
REFERENCE = SHARED / "reference"


def oracle(module: str):
    """Import an oracle package (torch, diffusers, transformers, librosa) for a live comparison."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get("MINRIFF_REQUIRE_ORACLE") == "1":
            pytest.fail(f"oracle package {module!r} is required (MINRIFF_REQUIRE_ORACLE=1) but missing: {e}")
        pytest.skip(f"oracle package {module!r} not installed")


def fixture_script(name: str):
    """Import tests/fixtures/<name>.py once (as module `name`); its torch imports are lazy."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def shared_file(*parts: str) -> Path:
    p = REFERENCE.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared reference data absent: {p}")
    return p


def rel_err(got, ref) -> float:
    """max |got - ref| / max |ref| (shapes must agree)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"shape {got.shape} != reference {ref.shape}"
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))
