"""The reference backend: plain NumPy, written to be read. Works in float32 or float64
(the result has the input's dtype). Shapes are checked in front of these functions
(see checks.py), so they assume valid input. Speed is not a goal here; clarity is."""
from __future__ import annotations

import numpy as np
from scipy.special import erf

from minriff.kernels.checks import conv_padding

xp = np


def conv2d(x, w, b=None, stride=1, padding=0):
    """x (N, C, H, W), w (O, C, kh, kw) -> (N, O, Ho, Wo); cross-correlation like torch."""
    top, bottom, left, right = conv_padding(padding)
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    kh, kw = w.shape[2:]
    # windows: (N, C, Ho, Wo, kh, kw), a view, no copy
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    y = np.einsum("nchwij,ocij->nohw", win, w, optimize=True)
    if b is not None:
        y = y + b[None, :, None, None]
    return y.astype(x.dtype, copy=False)


def linear(x, w, b=None):
    """x (..., in), w (out, in) -> (..., out)."""
    y = x @ w.T
    return y + b if b is not None else y


def group_norm(x, groups, weight, bias, eps, silu=False):
    """Normalise each (sample, group) over its channels and all positions; then affine."""
    N, C = x.shape[:2]
    g = x.reshape(N, groups, -1)
    mean = g.mean(axis=-1, keepdims=True)
    var = g.var(axis=-1, keepdims=True)  # biased, like torch
    y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
    affine_shape = (1, C) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(affine_shape)
    if bias is not None:
        y = y + bias.reshape(affine_shape)
    return silu_(y) if silu else y


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention(q, k, v, scale=None, causal=False):
    """softmax(q kᵀ · scale) v with q (B, H, Tq, D), k/v (B, H, Tk, D).
    causal: query i sees keys j <= i (top-left aligned, as torch's is_causal).
    The reference forms the full (Tq, Tk) matrix; the fast backends never do."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    s = (q @ np.swapaxes(k, -1, -2)) * scale  # (B, H, Tq, Tk)
    if causal:
        Tq, Tk = s.shape[-2:]
        future = np.arange(Tk)[None, :] > np.arange(Tq)[:, None]
        s = np.where(future, -np.inf, s)
    return (softmax(s, axis=-1) @ v).astype(q.dtype, copy=False)


def silu_(x):
    return x / (1.0 + np.exp(-x))


def silu(x):
    return silu_(x)


def relu(x, residual=None):
    """max(x, 0), or max(x + residual, 0): the residual add before the ReLU fused (TAESD's blocks)."""
    if residual is not None:
        x = x + residual
    return np.maximum(x, 0).astype(x.dtype, copy=False)


def gelu(x):
    """Exact GELU: x · Φ(x) with the erf form."""
    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))).astype(x.dtype, copy=False)


def quick_gelu(x):
    """CLIP's approximation: x · σ(1.702 x)."""
    return x / (1.0 + np.exp(-1.702 * x))


def geglu(x):
    """Split the last axis into halves (a, b) and return a · gelu(b)."""
    a, b = np.split(x, 2, axis=-1)
    return a * gelu(b)


def upsample_nearest2x(x):
    return x.repeat(2, axis=2).repeat(2, axis=3)


def timestep_embedding(t, dim, flip_sin_to_cos=True, shift=0.0, max_period=10000.0):
    """Sinusoidal embedding (B,) -> (B, dim): frequencies exp(-ln(max_period)·i/(half - shift)),
    i = 0..half-1; [sin, cos] (or [cos, sin] when flipped); a zero column pads odd dims.
    Every step runs in t's float dtype (float32 for integer t), as diffusers'
    get_timestep_embedding does in float32: the arguments reach ~1000 rad, where a one-ulp
    difference in a frequency moves sin/cos by ~1e-4, so the frequencies must be the same floats.
    exp is evaluated in float64 and rounded once (torch's float32 exp agrees with that on all
    but ~1% of frequencies; numpy's float32 exp differs on ~30%)."""
    half = dim // 2
    dtype = np.dtype(t.dtype if np.issubdtype(t.dtype, np.floating) else np.float32).type
    exponent = dtype(-np.log(max_period)) * np.arange(half, dtype=dtype) / dtype(half - shift)
    freqs = np.exp(exponent.astype(np.float64)).astype(dtype)
    arg = t.astype(dtype)[:, None] * freqs[None, :]
    sin, cos = np.sin(arg), np.cos(arg)
    emb = np.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = np.pad(emb, ((0, 0), (0, 1)))
    return emb
