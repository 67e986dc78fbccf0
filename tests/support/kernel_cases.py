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


def tile_scale(scale, t=4):
    """Each output's scale raised to the largest in its t x t output tile (tiles start at (0, 0)).
    Winograd mixes all 36 inputs of a patch into every output of its tile, so an output's rounding
    error follows the tile's magnitudes: a corner pixel whose window holds one small product in a
    tile of large ones (c = 1, padding 2) erred by 4.5e-5 of its own |x| conv |w|."""
    N, O, H, W = scale.shape
    Hp, Wp = -(-H // t) * t, -(-W // t) * t
    padded = np.zeros((N, O, Hp, Wp))
    padded[:, :, :H, :W] = scale
    tiles = padded.reshape(N, O, Hp // t, t, Wp // t, t).max(axis=(3, 5))
    return np.repeat(np.repeat(tiles, t, axis=2), t, axis=3)[:, :, :H, :W]


def error_scale(op, args, kw):
    """The magnitude a 1e-5 relative error is measured against when comparing with torch
    (None: |expected| itself). Sums of products: the same op on |inputs| (see assert_close).
    timestep_embedding: sin/cos of t·f with t up to 1000. The arguments t·f of the two sides
    differ by up to 2^-22·|t·f|: one ulp (2^-23 relative) of a frequency, since torch's float32
    exp is not always correctly rounded, plus the float32 rounding of the product on each side
    (2^-24 each). That is added (as |t·f|·2^-22 / rtol) to the scale. (Found by hypothesis:
    t = 609.99, dim 1280, shift 1 differed by 2 ulps of the argument.)"""
    ref = kernels.ops("ref")
    a64 = [np.abs(as64(a)) if isinstance(a, np.ndarray) else a for a in args]
    if op in ("conv2d", "linear"):
        return getattr(ref, op)(*a64, **kw)
    if op == "attention":
        q, k, v = (as64(a) for a in args)
        return ref.attention(q, k, np.abs(v), **kw)
    if op == "timestep_embedding":
        t, dim = args
        emb = ref.timestep_embedding(np.abs(as64(t)), dim, **kw)
        half = dim // 2
        freqs = np.exp(-np.log(10000.0) * np.arange(half) / (half - kw.get("shift", 0.0)))
        arg = np.abs(as64(t))[:, None] * freqs[None, :]
        slack = np.zeros_like(emb)
        slack[:, :half] = slack[:, half : 2 * half] = arg * 2.0**-22 / RTOL
        return np.abs(emb) + slack
    if op in ("gelu", "geglu"):
        # torch evaluates 0.5·x·(1 + erf(x/√2)) in float32: for x < 0 the sum cancels and keeps
        # the absolute rounding of erf (~2^-24), i.e. an error up to ~0.5·|x|·2^-23 (times |a|).
        x = as64(args[0])
        a, b = (np.split(x, 2, axis=-1) if op == "geglu" else (np.ones_like(x), x))
        return np.abs(ref.geglu(x) if op == "geglu" else ref.gelu(x)) + 0.5 * np.abs(a * b) * 2.0**-23 / RTOL
    return None
