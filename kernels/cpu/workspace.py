"""What the conv paths (cpu_conv, cpu_winograd) share: per-thread scratch buffers, and the copy of
an image into a zero-padded flat layout."""
from __future__ import annotations

import threading

import numpy as np
from numba import njit, prange

from minriff.kernels.cpu.vecmath import FMA_FLAGS

KEEP_BYTES = 64 << 20
_workspace = threading.local()


def buffer(name: str, n: int) -> np.ndarray:
    """A float32 scratch array of n elements, one per (thread, name), reused across calls (first-
    touching fresh pages costs ~10% of a 3x3 SD conv); kept only up to KEEP_BYTES each, so a
    512x512 VAE layer does not leave hundreds of MB behind."""
    buf = getattr(_workspace, name, None)
    if buf is not None and buf.size >= n:
        return buf[:n]
    buf = np.empty(n, np.float32)
    if 4 * n <= KEEP_BYTES:
        setattr(_workspace, name, buf)
    return buf


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def pad_flat(x, top, left, Hp, Wp, xp):
    """x (C, H, W) -> xp (C, S) with xp[c, (top+h)*Wp + left+w] = x[c, h, w], zeros elsewhere."""
    C, H, W = x.shape
    for c in prange(C):
        xp[c, :] = 0
        for h in range(H):
            base = (top + h) * Wp + left
            for w in range(W):
                xp[c, base + w] = x[c, h, w]
