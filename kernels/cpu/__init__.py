"""The cpu backend: Numba kernels around BLAS, float32. Weights (conv/linear/norm parameters) may
also be float16: they are widened where they are used (half.py). Same signatures as ref.py; shapes are
checked in front (checks.py). Kernels live in vecmath (vectorisable exp), elementwise, norm, conv
(+ winograd, workspace), attention and blas (BLAS calls, the work-item thread pool); this module
adapts arguments and layouts. README.md: the file map and how to write a CPU kernel.

Determinism: kernels parallelise over independent rows/groups/work items only and every
reduction runs sequentially inside one task, so the bits do not depend on the thread count."""
from __future__ import annotations

import math

import numba
import numpy as np

from minriff.kernels.checks import conv_padding
from minriff.kernels.cpu import attention as cpu_attention
from minriff.kernels.cpu import conv as cpu_conv
from minriff.kernels.cpu import elementwise as ew
from minriff.kernels.cpu import norm as cpu_norm
from minriff.kernels.cpu import weightcache, weightgemm
from minriff.kernels.cpu.blas import gemm_into, run_items, single_threaded_blas
from minriff.kernels.cpu.half import as_float32, bits_or_float32

# kernels.weight_cache and its pool functions find these here
from minriff.kernels.cpu.weightcache import pooled_bytes as weight_cache_pooled_bytes  # noqa: F401
from minriff.kernels.cpu.weightcache import release as release_weight_cache  # noqa: F401
from minriff.kernels.cpu.weightcache import weight_cache  # noqa: F401

xp = np


def _f32(a):
    a = np.asarray(a, dtype=np.float32)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)  # (keeps 0-d arrays 0-d)


def _param(a, n, fill):
    return np.full(n, fill, np.float32) if a is None else as_float32(a)


def conv2d(x, w, b=None, stride=1, padding=0):
    """x (N, C, H, W), w (O, C, kh, kw) -> (N, O, Ho, Wo). w may be float16 (widened where used)."""
    bias = None if b is None else as_float32(b)
    pads = conv_padding(padding)
    if w.shape[2:] == (1, 1) and int(stride) == 1 and pads == (0, 0, 0, 0) and _stored_as(x, (0, 2, 3, 1)):
        # channels-last memory (a transformer's tokens seen as an image): read as it lies
        w2 = weightcache.float32_of(w, scratch="weight").reshape(w.shape[:2])
        return cpu_conv.conv1x1_channels_last(x.transpose(0, 2, 3, 1), w2, bias)
    return cpu_conv.conv2d(_f32(x), bits_or_float32(w), bias, int(stride), pads, key=w)


# Rows per work item of a long linear (a multiple of 16; same for any thread count). 1024 against
# 512: alone, (8192, 320) -> 320 at 268 against 242 GFLOP/s, (2048, 640) -> 640 296 / 279; in a
# full-size guided step (5 interleaved rounds) the long linears took 1.68 against 1.80 s (medians).
# 256 and 128 were slower than 512.
LINEAR_BAND_ROWS = 1024
LONG_LINEAR_MIN_ROWS = 2048  # inputs of this many rows and more go in row bands; shorter ones in weight blocks
CHANNELS_FIRST_MIN_TOKENS = 64  # tokens per batch entry from which channels-first input is read in place
# Multiply-adds from which a short linear runs in weight blocks on the run_items threads (weightgemm);
# smaller ones run on the calling thread with BLAS on one thread. Not numpy's threaded `x @ wᵀ`: that
# wakes OpenBLAS's pool, which then spins beside the next op (see weightgemm.a_b).
WEIGHT_BLOCKS_MIN = 1 << 20


def linear(x, w, b=None):
    """x (..., in), w (out, in) -> (..., out): GEMMs against wᵀ (no copy of a float32 w).
    Long inputs (the UNet's 4096 tokens) go in bands of LINEAR_BAND_ROWS rows on the run_items
    threads, each band's rows first set to the bias and then accumulated into (beta = 1). In
    isolation that is no faster than numpy's own threaded GEMM, but in a model step it was 4.5%
    faster overall: OpenBLAS's pool then never spins beside the Numba and run_items threads of
    the next op. A long input that is the (0, 2, 1) view of a contiguous (B, in, T) array (a UNet
    transformer's GroupNorm output as tokens) is read as it lies, transposed inside the GEMMs.
    Short inputs go in blocks of output features (weightgemm.py), tiny ones on this thread.
    float16 weights are widened per call (by each block's thread, or once before the bands), or
    once per sampling loop inside kernels.weight_cache (weightcache.float32_of)."""
    K = w.shape[1]
    bias = None if b is None else as_float32(b)
    if _long_channels_first(x):
        return _linear_channels_first(x.transpose(0, 2, 1), weightcache.float32_of(w, scratch="weight"), bias)
    x2 = _f32(x).reshape(-1, K)
    R, O = x2.shape[0], w.shape[0]
    if R < LONG_LINEAR_MIN_ROWS:
        if R * w.size >= WEIGHT_BLOCKS_MIN:
            y = np.empty((R, O), np.float32)
            # float16 outside a sampling loop: widened per block by the block's thread
            weightgemm.x_wt(x2, weightcache.float32_of(w) if weightcache.active() else bits_or_float32(w), y, bias)
            return y.reshape(*x.shape[:-1], O)
        with single_threaded_blas():
            y = x2 @ weightcache.float32_of(w, scratch="weight").T
        if bias is not None:
            ew.add_bias_rows(y, bias)
        return y.reshape(*x.shape[:-1], O)
    wf = weightcache.float32_of(w, scratch="weight")
    y = np.empty((R, O), np.float32)

    def band(r0):
        rows = slice(r0, min(r0 + LINEAR_BAND_ROWS, R))
        if bias is not None:
            y[rows] = bias
        gemm_into(x2[rows], wf, y[rows], beta=0.0 if bias is None else 1.0, trans_b=True)

    run_items(band, list(range(0, R, LINEAR_BAND_ROWS)), numba.get_num_threads())
    return y.reshape(*x.shape[:-1], O)


def _stored_as(x, axes) -> bool:
    """x is a float32 numpy view whose transpose by `axes` is C-contiguous (its memory holds that
    layout) and whose axis 1 has more than one element (else every layout is contiguous)."""
    return (isinstance(x, np.ndarray) and x.ndim == len(axes) and x.dtype == np.float32 and x.shape[1] > 1
            and x.transpose(axes).flags.c_contiguous)


def _long_channels_first(x) -> bool:
    """x (B, T, C) is the (0, 2, 1) view of a C-contiguous (B, C, T) (an image's pixels as tokens: a
    UNet transformer's input after GroupNorm) and long enough for row bands: BLAS reads it as it is."""
    return (_stored_as(x, (0, 2, 1)) and x.shape[2] > 1 and x.shape[1] >= CHANNELS_FIRST_MIN_TOKENS
            and x.shape[0] * x.shape[1] >= LONG_LINEAR_MIN_ROWS)


def _linear_channels_first(xt, w, bias):
    """xt (B, K, T) C-contiguous, w (O, K) float32 -> (B, T, O) = xtᵀ wᵀ (+ bias): bands of
    LINEAR_BAND_ROWS tokens per batch entry with the token operand transposed in the GEMM, instead
    of first copying (B, K, T) to (B, T, K) (a strided copy: 3.6 ms on one core for (2, 320, 4096))."""
    B, _, T = xt.shape
    y = np.empty((B, T, w.shape[0]), np.float32)

    def band(item):
        n, t0 = item
        rows = slice(t0, min(t0 + LINEAR_BAND_ROWS, T))
        if bias is not None:
            y[n, rows] = bias
        gemm_into(xt[n, :, rows], w, y[n, rows], beta=0.0 if bias is None else 1.0, trans_a=True, trans_b=True)

    run_items(band, [(n, t0) for n in range(B) for t0 in range(0, T, LINEAR_BAND_ROWS)], numba.get_num_threads())
    return y


def group_norm(x, groups, weight, bias, eps, silu=False):
    """x (N, C, ...) normalised per (sample, group); optional fused SiLU."""
    N, C = x.shape[:2]
    x3 = _f32(x).reshape(N * groups, C // groups, -1)
    out = np.empty_like(x3)
    cpu_norm.group_norm_rows(x3, _param(weight, C, 1.0), _param(bias, C, 0.0), float(eps), bool(silu), out)
    return out.reshape(x.shape)


def layer_norm(x, weight, bias, eps):
    C = x.shape[-1]
    x2 = _f32(x).reshape(-1, C)
    out = np.empty_like(x2)
    cpu_norm.layer_norm_rows(x2, _param(weight, C, 1.0), _param(bias, C, 0.0), float(eps), out)
    return out.reshape(x.shape)


def softmax(x, axis=-1):
    moved = np.moveaxis(_f32(x), axis, -1)
    x2 = np.ascontiguousarray(moved).reshape(-1, moved.shape[-1])
    out = np.empty_like(x2)
    if x2.size:
        cpu_norm.softmax_rows(x2, out)
    return np.moveaxis(out.reshape(moved.shape), -1, axis)


def attention(q, k, v, scale=None, causal=False):
    """softmax(q kᵀ · scale) v, tiled; q (B, H, Tq, D), k/v (B, H, Tk, D)."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    q, k, v = (np.asarray(a, dtype=np.float32) for a in (q, k, v))  # any strides: the kernel copies them once
    return cpu_attention.attention(q, k, v, float(scale), bool(causal))


def _map(kernel, x):
    xf = _f32(x)
    out = np.empty_like(xf)
    kernel(xf.reshape(-1), out.reshape(-1))
    return out


def silu(x):
    return _map(ew.silu_flat, x)


def relu(x, residual=None):
    """max(x, 0); with `residual`, max(x + residual, 0) in one pass."""
    if residual is None:
        return _map(ew.relu_flat, x)
    xf, rf = _f32(x), _f32(residual)
    out = np.empty_like(xf)
    ew.add_relu_flat(xf.reshape(-1), rf.reshape(-1), out.reshape(-1))
    return out


def gelu(x):
    return _map(ew.gelu_flat, x)


def quick_gelu(x):
    return _map(ew.quick_gelu_flat, x)


def geglu(x):
    """(..., 2F) -> (..., F) = a * gelu(b) for the halves (a, b)."""
    F2 = x.shape[-1]
    x2 = _f32(x).reshape(-1, F2)
    out = np.empty((x2.shape[0], F2 // 2), np.float32)
    ew.geglu_rows(x2, out)
    return out.reshape(*x.shape[:-1], F2 // 2)


def upsample_nearest2x(x):
    N, C, H, W = x.shape
    out = np.empty((N * C, 2 * H, 2 * W), np.float32)
    ew.upsample2x_rows(_f32(x).reshape(N * C, H, W), out)
    return out.reshape(N, C, 2 * H, 2 * W)


def timestep_embedding(t, dim, flip_sin_to_cos=True, shift=0.0, max_period=10000.0):
    """(B,) -> (B, dim), float32, the same float32 formula as diffusers' get_timestep_embedding:
    freqs = exp(-ln(max_period) * i / (half - shift)) with the exponent in float32."""
    half = dim // 2
    exponent = np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32) / np.float32(half - shift)
    freqs = np.exp(exponent.astype(np.float64)).astype(np.float32)  # correctly rounded, see ref.py
    out = np.empty((t.shape[0], dim), np.float32)
    ew.sincos_table(_f32(t), freqs, bool(flip_sin_to_cos), out)
    return out
