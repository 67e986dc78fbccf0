"""Shared helpers for the kernel tests: float64 reference and the tolerance rules."""
from __future__ import annotations

import numpy as np

from minriff import kernels

RTOL, ATOL = 1e-5, 1e-6


def ops(name):
    return kernels.ops(name)


def f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def as64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def assert_close(got, want, scale=None, rtol=RTOL, atol=ATOL, what=""):
    """|got - want| <= atol + rtol * scale, where scale defaults to |want|.

    For sums of products (conv, linear, attention) `scale` is the same computation on absolute
    values (e.g. |x| conv |w|): float32 rounding is relative to the sum of |terms|, not to a
    result that may cancel to ~0, so that is the scale a 1e-5 relative bound must use."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    s = np.abs(want) if scale is None else np.maximum(np.abs(want), scale)
    err = np.abs(got - want) - (atol + rtol * s)
    if np.any(err > 0) or not np.all(np.isfinite(got)):
        i = np.unravel_index(np.argmax(err), err.shape)
        raise AssertionError(f"{what}: mismatch at {i}: got {got[i]!r}, want {want[i]!r} (scale {s[i]:.3g})")
