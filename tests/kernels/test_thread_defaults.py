"""minriff/__init__.py tells numpy's OpenBLAS and Numba's OpenMP pools to sleep soon after their
work (they take turns op by op and would otherwise spin on each other's cores); a user's own
setting wins, MINRIFF_THREAD_DEFAULTS=0 turns it off, and the benchmarks' torch child runs
without it. Same for the glibc malloc setting that keeps freed big arrays for reuse."""
from __future__ import annotations

import os
import subprocess
import sys

KEYS = ("GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")


def _env_after_import(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in KEYS + ("MINRIFF_THREAD_DEFAULTS",)}
    env.update(overrides)
    code = f"import minriff, os, json; print(json.dumps([os.environ.get(k) for k in {KEYS!r}]))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return tuple(__import__("json").loads(out.stdout))


def test_defaults_are_set_on_import():
    assert _env_after_import() == ("100000", "24")


def test_a_users_setting_wins():
    assert _env_after_import(GOMP_SPINCOUNT="5") == ("5", "24")


def test_can_be_turned_off():
    assert _env_after_import(MINRIFF_THREAD_DEFAULTS="0") == (None, None)


FAULTS = """
import resource, numpy as np, json
import minriff
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(25 << 20, np.float32); del a  # 100 MB, written, freed
f0 = faults()
b = np.ones(25 << 20, np.float32)  # the same size again: fresh pages, or the freed ones?
print(json.dumps([minriff.MALLOC_TUNED, faults() - f0]))
"""


def _faults(**overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "MINRIFF_THREAD_DEFAULTS"}
    env.update(overrides)
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
    return tuple(__import__("json").loads(out.stdout))


def test_freed_big_arrays_are_reused_without_page_faults():
    if not sys.platform.startswith("linux"):
        import pytest
        pytest.skip("glibc malloc only")
    tuned, tuned_faults = _faults()
    off, off_faults = _faults(MINRIFF_THREAD_DEFAULTS="0")
    user, _ = _faults(MALLOC_ARENA_MAX="2")  # a user's own malloc setting: hands off
    assert (tuned, off, user) == (True, False, False)
    # (numpy asks for huge pages on big arrays, so a fault may be 2 MB: ~500 for the 100 MB array)
    assert off_faults > 40 and tuned_faults < off_faults / 10, (tuned_faults, off_faults)


PAGES = """
import json, sys
if sys.argv[1] == "numpy-first":
    import numpy
import minriff
from numpy._core.multiarray import _get_madvise_hugepage
print(json.dumps([minriff.SMALL_PAGES, _get_madvise_hugepage()]))
"""


def _pages(order="minriff-first", **overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMPY_MADVISE_HUGEPAGE", "MINRIFF_THREAD_DEFAULTS")}
    env.update(overrides)
    out = subprocess.run([sys.executable, "-c", PAGES, order], env=env, capture_output=True, text=True, check=True)
    return tuple(__import__("json").loads(out.stdout))


def test_numpy_huge_page_advice_is_off_whichever_is_imported_first():
    assert _pages() == (True, False)
    assert _pages("numpy-first") == (True, False)


def test_numpy_huge_page_advice_a_users_setting_wins_and_can_be_turned_off():
    assert _pages(NUMPY_MADVISE_HUGEPAGE="1") == (False, True)
    assert _pages(MINRIFF_THREAD_DEFAULTS="0") == (False, True)


def test_the_benchmarks_torch_child_gets_numpys_default():
    import minriff

    assert minriff.ENV_DEFAULTS.get("NUMPY_MADVISE_HUGEPAGE") == ("0" if minriff.SMALL_PAGES else None)
