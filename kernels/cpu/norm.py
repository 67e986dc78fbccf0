"""Numba kernels for the normalisations and softmax. Parallel over independent rows/groups only;
each reduction runs in one thread in a fixed order, so results do not depend on the thread count.
Sums accumulate in float64 (the reduction helpers may reorder within their own loop, which is
fixed at compile time, never by the thread count)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from minriff.kernels.cpu.vecmath import FMA_FLAGS, expf, prefer_wide_vectors, row_max, sigmoidf

_REDUCE = {"reassoc", "nsz", "contract"}  # lets LLVM vectorise the float64 sums
# error_model="numpy" everywhere: no ZeroDivisionError branch per division, which blocks vectorising


@njit(cache=True, error_model="numpy", fastmath=_REDUCE)
def _mean_var(row):
    """Mean and biased variance of a 1-D float32 array in one pass of float64 sums. Float64
    makes E[x²] - E[x]² safe for float32 data unless |mean|/std exceeds ~1e4."""
    prefer_wide_vectors()
    s = 0.0
    ss = 0.0
    for i in range(row.size):
        v = np.float64(row[i])
        s += v
        ss += v * v
    mean = s / row.size
    return mean, max(ss / row.size - mean * mean, 0.0)


@njit(cache=True, error_model="numpy", fastmath=_REDUCE)
def _sum(row):
    prefer_wide_vectors()
    s = 0.0
    for i in range(row.size):
        s += np.float64(row[i])
    return s


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS)
def _normalise(src, dst, m_hi, m_lo, scale, shift, silu):
    """dst = (src - mean) * scale + shift, optionally followed by SiLU. The float64 mean comes as
    m_hi + m_lo (two float32s): subtracting a mean rounded to float32 would cost ~1e-6 relative
    when the spread is small against the mean."""
    prefer_wide_vectors()
    if silu:
        for i in range(src.size):
            y = ((src[i] - m_hi) - m_lo) * scale + shift
            dst[i] = y * sigmoidf(y)
    else:
        for i in range(src.size):
            dst[i] = ((src[i] - m_hi) - m_lo) * scale + shift


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def group_norm_rows(x, weight, bias, eps, silu, out):
    """x, out (N*G, Cg, S); weight, bias (G*Cg,). One (sample, group) per parallel task."""
    NG, Cg, S = x.shape
    G = weight.size // Cg
    for ng in prange(NG):
        g = ng % G
        mean, var = _mean_var(x[ng].ravel())
        rstd = 1.0 / np.sqrt(var + eps)
        m_hi = np.float32(mean)
        m_lo = np.float32(mean - m_hi)
        for c in range(Cg):
            ch = g * Cg + c
            _normalise(x[ng, c], out[ng, c], m_hi, m_lo, np.float32(rstd * weight[ch]), bias[ch], silu)


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def layer_norm_rows(x, weight, bias, eps, out):
    """x, out (R, C): normalise each row over C, then scale by weight[c] and add bias[c]."""
    R, C = x.shape
    for r in prange(R):
        mean, var = _mean_var(x[r])
        rstd = 1.0 / np.sqrt(var + eps)
        m_hi = np.float32(mean)
        m_lo = np.float32(mean - m_hi)  # see _normalise
        r32 = np.float32(rstd)
        for c in range(C):
            out[r, c] = ((x[r, c] - m_hi) - m_lo) * r32 * weight[c] + bias[c]


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def softmax_rows(x, out):
    """x, out (R, C): softmax over each row."""
    R, C = x.shape
    for r in prange(R):
        prefer_wide_vectors()
        m = row_max(x, r, C)
        for c in range(C):
            out[r, c] = expf(x[r, c] - m)
        inv = np.float32(1.0 / _sum(out[r]))
        for c in range(C):
            out[r, c] *= inv
