"""Numba elementwise kernels: activations (ReLU with a fused residual add), GEGLU, nearest
upsample, bias rows, timestep embedding. Pure maps: any thread split gives the same bits."""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from minriff.kernels.cpu.vecmath import FMA_FLAGS, erfcf, prefer_wide_vectors, sigmoidf

_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))


@njit(inline="always", cache=True, error_model="numpy")
def gelu1(x):
    # 1 + erf(z) written as erfc(-z): no cancellation for negative x, where 1 + erf(z) -> 0
    return np.float32(0.5) * x * erfcf(-x * _INV_SQRT2)


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def silu_flat(x, out):
    for i in prange(x.size):
        prefer_wide_vectors()  # in the loop body: prange outlines it into its own function
        out[i] = x[i] * sigmoidf(x[i])


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def quick_gelu_flat(x, out):
    for i in prange(x.size):
        prefer_wide_vectors()
        out[i] = x[i] * sigmoidf(np.float32(1.702) * x[i])


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def relu_flat(x, out):
    for i in prange(x.size):
        prefer_wide_vectors()
        v = x[i]
        out[i] = np.float32(0) if v < 0 else v  # (not v > 0: NaN stays NaN, as in torch)


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def add_relu_flat(x, r, out):
    """out = max(x + r, 0): a residual block's skip add and its ReLU in one pass over memory."""
    for i in prange(x.size):
        prefer_wide_vectors()
        v = x[i] + r[i]
        out[i] = np.float32(0) if v < 0 else v


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def gelu_flat(x, out):
    for i in prange(x.size):
        prefer_wide_vectors()
        out[i] = gelu1(x[i])


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def geglu_rows(x, out):
    """x (R, 2F) -> out (R, F) = a * gelu(b) with a = x[:, :F], b = x[:, F:]."""
    R, F = out.shape
    for r in prange(R):
        prefer_wide_vectors()
        for j in range(F):
            out[r, j] = x[r, j] * gelu1(x[r, F + j])


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def upsample2x_rows(x, out):
    """x (P, H, W) -> out (P, 2H, 2W), nearest."""
    P, H, W = x.shape
    for ph in prange(P * H):
        p, h = ph // H, ph % H
        for w in range(W):
            v = x[p, h, w]
            out[p, 2 * h, 2 * w] = v
            out[p, 2 * h, 2 * w + 1] = v
        for w2 in range(2 * W):
            out[p, 2 * h + 1, w2] = out[p, 2 * h, w2]


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def add_bias_rows(y, b):
    """y (R, O) += b (O,)."""
    for r in prange(y.shape[0]):
        for o in range(y.shape[1]):
            y[r, o] += b[o]


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def add_bias_channels(y, b):
    """y (N, O, S) += b (O,)[:, None]."""
    N, O, S = y.shape
    for no in prange(N * O):
        n, o = no // O, no % O
        bo = b[o]
        for s in range(S):
            y[n, o, s] += bo


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS)
def sincos_table(t, freqs, flip, out):
    """out (B, dim): [cos, sin] (flip) or [sin, cos] of t[b] * freqs[i]; odd dim: last column 0."""
    half = freqs.size
    for b in range(t.size):
        for i in range(half):
            a = t[b] * freqs[i]
            s, c = math.sin(a), math.cos(a)
            out[b, i] = c if flip else s
            out[b, half + i] = s if flip else c
        for j in range(2 * half, out.shape[1]):
            out[b, j] = 0
