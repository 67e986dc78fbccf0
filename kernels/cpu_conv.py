"""conv2d on the CPU: 1x1 stride-1 unpadded convs are one GEMM per image; everything else packs
input windows into columns (im2col, Numba, parallel over rows of the column matrix) and does one
GEMM per chunk of output rows. Columns live in a per-thread workspace that is reused across calls
(first-touching a fresh 47 MB buffer costs ~10% of a 3x3 SD conv) and capped in size, so a
512x512 VAE layer is done in row chunks instead of a multi-GB column matrix."""
from __future__ import annotations

import threading

import numpy as np
from numba import njit, prange

from .cpu_math import _FMA

from .cpu_elementwise import add_bias_channels

COLS_LIMIT_BYTES = 64 << 20
_workspace = threading.local()


def _cols_buffer(n: int) -> np.ndarray:
    buf = getattr(_workspace, "cols", None)
    if buf is None or buf.size < n:
        buf = _workspace.cols = np.empty(n, np.float32)
    return buf[:n]


@njit(cache=True, error_model="numpy", fastmath=_FMA, parallel=True)
def im2col(x, kh, kw, stride, top, left, oh0, Wo, cols):
    """x (C, H, W) -> cols (C*kh*kw, rows*Wo) for output rows oh0 .. oh0+rows-1.
    Row r = (c, i, j) holds x[c, oh*stride - top + i, ow*stride - left + j] (0 outside)."""
    C, H, W = x.shape
    rows = cols.shape[1] // Wo
    for r in prange(C * kh * kw):
        c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        for oh in range(rows):
            ih = (oh0 + oh) * stride - top + i
            base = oh * Wo
            if ih < 0 or ih >= H:
                for ow in range(Wo):
                    cols[r, base + ow] = 0
            elif stride == 1:
                lo = min(max(left - j, 0), Wo)  # first ow with iw >= 0
                hi = max(min(W + left - j, Wo), lo)  # end of ow with iw < W
                for ow in range(lo):
                    cols[r, base + ow] = 0
                for ow in range(lo, hi):
                    cols[r, base + ow] = x[c, ih, ow - left + j]
                for ow in range(hi, Wo):
                    cols[r, base + ow] = 0
            else:
                for ow in range(Wo):
                    iw = ow * stride - left + j
                    cols[r, base + ow] = x[c, ih, iw] if 0 <= iw < W else np.float32(0)


def conv2d(x, w, b, stride, pads):
    """x (N, C, H, W) float32 contiguous, w (O, C, kh, kw), pads (top, bottom, left, right)."""
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    top, bottom, left, right = pads
    Ho = (H + top + bottom - kh) // stride + 1
    Wo = (W + left + right - kw) // stride + 1
    y = np.empty((N, O, Ho * Wo), np.float32)
    w2 = np.ascontiguousarray(w.reshape(O, C * kh * kw))
    if kh == kw == 1 and stride == 1 and pads == (0, 0, 0, 0):
        for n in range(N):  # (O, C) @ (C, H*W)
            np.matmul(w2, x[n].reshape(C, H * W), out=y[n])
    else:
        K = C * kh * kw
        rows_per_chunk = max(1, min(Ho, COLS_LIMIT_BYTES // (4 * K * Wo)))
        for n in range(N):
            for oh0 in range(0, Ho, rows_per_chunk):
                rows = min(rows_per_chunk, Ho - oh0)
                cols = _cols_buffer(K * rows * Wo).reshape(K, rows * Wo)
                im2col(x[n], kh, kw, stride, top, left, oh0, Wo, cols)
                np.matmul(w2, cols, out=y[n, :, oh0 * Wo : (oh0 + rows) * Wo])
    if b is not None:
        add_bias_channels(y, b)
    return y.reshape(N, O, Ho, Wo)
