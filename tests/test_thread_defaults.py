"""minriff/__init__.py tells numpy's OpenBLAS and Numba's OpenMP pools to sleep right after their
work (they take turns op by op and would otherwise spin on each other's cores); a user's own
setting wins, MINRIFF_THREAD_DEFAULTS=0 turns it off, and the benchmarks' torch child runs
without it."""
from __future__ import annotations

import os
import subprocess
import sys

KEYS = ("GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")


def _env_after_import(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in KEYS + ("MINRIFF_THREAD_DEFAULTS",)}
    env.update(overrides)
    code = "import minriff, os, json; print(json.dumps([os.environ.get(k) for k in %r]))" % (KEYS,)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return tuple(__import__("json").loads(out.stdout))


def test_defaults_are_set_on_import():
    assert _env_after_import() == ("100000", "24")


def test_a_users_setting_wins():
    assert _env_after_import(GOMP_SPINCOUNT="5") == ("5", "24")


def test_can_be_turned_off():
    assert _env_after_import(MINRIFF_THREAD_DEFAULTS="0") == (None, None)
