"""Launch code of the cuda backend: the ops of kernels/ref.py as launches of the CUDA C kernels
in this folder (module loaders in loader.py), matrix products through xp.matmul (cuBLAS on a GPU).
Written once for both loaders: on a GPU `xp` is CuPy, on the emulator it is NumPy."""
from __future__ import annotations

import math

import numpy as np

from minriff.kernels.checks import conv_padding
from minriff.kernels.cuda import loader

EMULATED = not loader.gpu_available()
if EMULATED:
    xp = np
else:  # pragma: no cover - GPU hosts only
    import cupy as xp

THREADS = 256
ROWS_PER_BLOCK = THREADS // 32  # row kernels: one warp per row


def _max_grid() -> int:
    """Blocks for the grid-stride kernels: enough to fill the device, no more. On a GPU 32 per SM;
    the emulator is a device with few cores, and every extra CUDA thread there costs a fiber."""
    if EMULATED:
        return 16
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    return 32 * int(props["multiProcessorCount"])


MAX_GRID = _max_grid()


def _k(family: str, name: str):
    return loader.module(family).get_function(name)


def _f32(a):
    return xp.ascontiguousarray(xp.asarray(a, dtype=xp.float32))


def _grid(n: int) -> int:
    return max(1, min(MAX_GRID, (n + THREADS - 1) // THREADS))


def asarray(a, dtype=None):
    """Host or device array -> this backend's array (its dtype kept unless dtype is given)."""
    return xp.asarray(a, dtype=dtype)


def to_host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _unary(name, x):
    x = _f32(x)
    y = xp.empty_like(x)
    if x.size:
        _k("elementwise", name)(_grid(x.size), THREADS, (x, y, x.size))
    return y


def silu(x):
    return _unary("silu", x)


def relu(x, residual=None):
    """max(x, 0); with `residual`, max(x + residual, 0) in one kernel."""
    if residual is None:
        return _unary("relu", x)
    x, r = _f32(x), _f32(residual)
    y = xp.empty_like(x)
    if x.size:
        _k("elementwise", "add_relu")(_grid(x.size), THREADS, (x, r, y, x.size))
    return y


def gelu(x):
    return _unary("gelu", x)


def quick_gelu(x):
    return _unary("quick_gelu", x)


def geglu(x):
    x = _f32(x)
    half = x.shape[-1] // 2
    y = xp.empty(x.shape[:-1] + (half,), dtype=xp.float32)
    rows = x.size // max(1, x.shape[-1])
    if y.size:
        _k("elementwise", "geglu")(_grid(y.size), THREADS, (x, y, rows, half))
    return y


def _add_bias(y, b, channels, inner):
    """In place: y (outer, channels, inner) += b[channel]."""
    if b is not None and y.size:
        _k("elementwise", "add_bias")(_grid(y.size), THREADS, (y, _f32(b), y.size, channels, inner))
    return y


def linear(x, w, b=None):
    """x (..., in), w (out, in) -> (..., out): xp.matmul, then the bias kernel."""
    x, w = _f32(x), _f32(w)
    y = xp.ascontiguousarray(xp.matmul(x, w.T))
    return _add_bias(y, b, w.shape[0], 1)


def conv2d(x, w, b=None, stride=1, padding=0):
    """x (N, C, H, W), w (O, C, kh, kw) -> (N, O, Ho, Wo): im2col kernel + xp.matmul."""
    x, w = _f32(x), _f32(w)
    top, bottom, left, right = conv_padding(padding)
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Ho, Wo = (H + top + bottom - kh) // stride + 1, (W + left + right - kw) // stride + 1
    if kh == kw == 1 and stride == 1 and not any((top, bottom, left, right)):
        cols = x.reshape(N, C, H * W)  # a 1x1 convolution is a matmul as it stands
    else:
        cols = xp.empty((N, C * kh * kw, Ho * Wo), dtype=xp.float32)
        if cols.size:
            _k("conv", "im2col")(_grid(cols.size), THREADS,
                                 (x, cols, N, C, H, W, kh, kw, stride, top, left, Ho, Wo))
    y = xp.ascontiguousarray(xp.matmul(w.reshape(O, -1), cols)).reshape(N, O, Ho, Wo)  # (N, O, L)
    return _add_bias(y, b, O, Ho * Wo)


def _affine(weight, bias, C):
    w = _f32(weight) if weight is not None else xp.ones(C, dtype=xp.float32)
    b = _f32(bias) if bias is not None else xp.zeros(C, dtype=xp.float32)
    return w, b


def group_norm(x, groups, weight, bias, eps, silu=False):
    x = _f32(x)
    N, C = x.shape[:2]
    S = x.size // max(1, N * C)
    w, b = _affine(weight, bias, C)
    y = xp.empty_like(x)
    if x.size:
        _k("norm", "group_norm")(N * groups, THREADS, (x, y, w, b, C, groups, S, float(eps), int(bool(silu))))
    return y


def layer_norm(x, weight, bias, eps):
    x = _f32(x)
    C = x.shape[-1]
    w, b = _affine(weight, bias, C)
    y = xp.empty_like(x)
    rows = x.size // max(1, C)
    if x.size:
        _k("norm", "layer_norm")((rows + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK, THREADS,
                                 (x, y, w, b, rows, C, float(eps)))
    return y


def softmax(x, axis=-1):
    x = _f32(x)
    last = xp.ascontiguousarray(xp.moveaxis(x, axis, -1))
    y = xp.empty_like(last)
    C = last.shape[-1]
    rows = last.size // max(1, C)
    if last.size and C <= 1024:
        _k("softmax", "softmax_rows")((rows + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK, THREADS, (last, y, rows, C))
    elif last.size:
        _k("softmax", "softmax_rows_block")(rows, THREADS, (last, y, C))
    return xp.moveaxis(y, -1, axis)


ATT_WARPS, ATT_MAX_D, ATT_MAX_BK, SHARED_LIMIT = 8, 512, 64, 48 * 1024


def attention_tile(D: int) -> int:
    """Keys per shared-memory tile for head dim D: the largest BK <= ATT_MAX_BK whose dynamic
    shared memory fits in 48 KB."""
    free = SHARED_LIMIT // 4 - ATT_WARPS * D - 2 * ATT_WARPS * ATT_MAX_BK
    return max(1, min(ATT_MAX_BK, free // (2 * D + 1)))


def attention_shared_bytes(D: int, BK: int) -> int:
    return 4 * (ATT_WARPS * D + BK * (D + 1) + BK * D + 2 * ATT_WARPS * ATT_MAX_BK)


def attention(q, k, v, scale=None, causal=False):
    """q (B, H, Tq, D), k/v (B, H, Tk, D) -> (B, H, Tq, D), tiled with online softmax."""
    q, k, v = _f32(q), _f32(k), _f32(v)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    if D > ATT_MAX_D:
        raise ValueError(f"attention: the cuda kernel supports head dims up to {ATT_MAX_D}, got {D}")
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    out = xp.empty_like(q)
    BK = attention_tile(D)
    shared = attention_shared_bytes(D, BK)
    if out.size:
        _k("attention", "attention_fwd")(((Tq + ATT_WARPS - 1) // ATT_WARPS, B * H), 32 * ATT_WARPS,
                                         (q, k, v, out, Tq, Tk, D, float(scale), int(bool(causal)), BK),
                                         shared_mem=shared)
    return out


def upsample_nearest2x(x):
    x = _f32(x)
    N, C, H, W = x.shape
    y = xp.empty((N, C, 2 * H, 2 * W), dtype=xp.float32)
    if y.size:
        _k("elementwise", "upsample_nearest2x")(_grid(y.size), THREADS, (x, y, N * C, H, W))
    return y


def timestep_embedding(t, dim, flip_sin_to_cos=True, shift=0.0, max_period=10000.0):
    t = _f32(t)
    emb = xp.empty((t.shape[0], dim), dtype=xp.float32)
    if emb.size:
        _k("elementwise", "timestep_embedding")(t.shape[0], min(dim, THREADS),
                                                (t, emb, dim, int(bool(flip_sin_to_cos)), float(shift),
                                                 float(max_period)))
    return emb


def lincomb(coeffs, arrays):
    """sum_i coeffs[i] * arrays[i] for 1 to 3 same-shape arrays in one kernel (scheduler updates:
    DDIM/Euler steps are 2-term, PNDM/LMS multistep and guidance 3-term combinations)."""
    arrays = [_f32(a) for a in arrays]
    if not 1 <= len(arrays) <= 3 or len(coeffs) != len(arrays):
        raise ValueError(f"lincomb: need 1 to 3 arrays with one coefficient each, got {len(arrays)} / {len(coeffs)}")
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"lincomb: shapes differ: {[tuple(a.shape) for a in arrays]}")
    out = xp.empty_like(arrays[0])
    n = out.size
    if not n:
        return out
    if len(arrays) == 1:
        arrays, coeffs = arrays * 2, (coeffs[0], 0.0)
    if len(arrays) == 2:
        _k("elementwise", "axpby")(_grid(n), THREADS, (out, *arrays, *map(float, coeffs), n))
    else:
        _k("elementwise", "axpbypcz")(_grid(n), THREADS, (out, *arrays, *map(float, coeffs), n))
    return out
