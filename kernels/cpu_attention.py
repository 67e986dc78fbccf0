"""Tiled attention with an online softmax (flash-attention style) on the CPU.

Work item = one (batch*head, block of queries). For each key tile: S = Q_blk K_tileᵀ (BLAS),
a Numba pass turns S into P = 2^(S - running max) in place and rescales the running sum and
output, then O_blk += P V_tile (BLAS). Extra memory per worker: O(block·D + block·tile), never
Tq×Tk. Work items run on a pool of Python threads (Numba and BLAS both release the GIL), each
with single-threaded BLAS for its small GEMMs (OpenBLAS's per-thread setting), so both cores
stay busy without oversubscription. Every work item is computed the same way whichever thread
runs it, so the result does not depend on the thread count."""
from __future__ import annotations

import ctypes
import glob
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

from .cpu_math import _FMA, exp2f

KEY_TILE = 512
TILE_ELEMS = 1 << 17  # query block * key tile (512 KB of float32 scores)


@njit(cache=True, error_model="numpy", fastmath=_FMA, nogil=True)
def online_softmax_step(s, m, l, acc, q0, k0, causal):
    """s (bq, bk) scores in log2 units for queries q0.., keys k0..; overwritten with P.
    m, l (bq,) running max and sum; acc (bq, D) running output, rescaled to the new max."""
    bq, bk = s.shape
    ninf = np.float32(-np.inf)
    for i in range(bq):
        kend = bk
        if causal:
            kend = min(bk, max(q0 + i - k0 + 1, 0))  # keys k0+j with k0+j <= q0+i
        rmax = ninf
        for j in range(kend):
            rmax = max(rmax, s[i, j])
        m_new = max(m[i], rmax)
        if m_new == ninf:  # nothing visible yet in this row
            for j in range(bk):
                s[i, j] = 0
            continue
        total = np.float32(0)
        for j in range(kend):
            p = exp2f(s[i, j] - m_new)
            s[i, j] = p
            total += p
        for j in range(kend, bk):
            s[i, j] = 0
        alpha = exp2f(m[i] - m_new)
        l[i] = l[i] * alpha + total
        for d in range(acc.shape[1]):
            acc[i, d] *= alpha
        m[i] = m_new


@njit(cache=True, error_model="numpy", fastmath=_FMA, nogil=True)
def finish_rows(acc, l, out):
    for i in range(acc.shape[0]):
        inv = np.float32(1.0) / l[i]
        for d in range(acc.shape[1]):
            out[i, d] = acc[i, d] * inv


def _find_blas_local_threads():
    """OpenBLAS's openblas_set_num_threads_local from numpy's bundled library, or None."""
    import numpy

    root = os.path.dirname(os.path.dirname(numpy.__file__))
    for path in glob.glob(os.path.join(root, "numpy.libs", "*openblas*.so*")):
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


_set_blas_threads_local = _find_blas_local_threads()
_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(n: int) -> ThreadPoolExecutor:
    if n not in _pools:
        init = (lambda: _set_blas_threads_local(1)) if _set_blas_threads_local else None
        _pools[n] = ThreadPoolExecutor(max_workers=n, initializer=init, thread_name_prefix="minriff-attn")
    return _pools[n]


def _run_item(q, k, v, out, bh, q0, bq, causal):
    """Attention for queries q0..q0+bq of head bh. q already scaled by scale*log2(e)."""
    Tk, D = k.shape[1:]
    qb = q[bh, q0 : q0 + bq]
    m = np.full(bq, -np.inf, np.float32)
    l = np.zeros(bq, np.float32)
    acc = np.zeros((bq, D), np.float32)
    kstop = min(Tk, q0 + bq) if causal else Tk
    for k0 in range(0, kstop, KEY_TILE):
        k1 = min(k0 + KEY_TILE, kstop)
        s = qb @ k[bh, k0:k1].T  # (bq, bk)
        online_softmax_step(s, m, l, acc, q0, k0, causal)
        acc += s @ v[bh, k0:k1]
    finish_rows(acc, l, out[bh, q0 : q0 + bq])


def attention(q, k, v, scale, causal):
    """q (B, H, Tq, D), k/v (B, H, Tk, D) float32 contiguous -> (B, H, Tq, D)."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    qs = (q * np.float32(scale / math.log(2.0))).reshape(B * H, Tq, D)
    k3, v3 = k.reshape(B * H, Tk, D), v.reshape(B * H, Tk, D)
    out = np.empty((B * H, Tq, D), np.float32)
    bq = max(16, min(1024, TILE_ELEMS // min(Tk, KEY_TILE)))
    items = [(bh, q0, min(bq, Tq - q0)) for bh in range(B * H) for q0 in range(0, Tq, bq)]
    nthreads = min(numba.get_num_threads(), len(items))
    if nthreads <= 1:  # same single-threaded GEMMs as the workers use: same bits
        prev = _set_blas_threads_local(1) if _set_blas_threads_local else None
        try:
            for it in items:
                _run_item(qs, k3, v3, out, *it, causal)
        finally:
            if prev is not None:
                _set_blas_threads_local(prev)
    else:
        def work(share):
            for it in share:
                _run_item(qs, k3, v3, out, *it, causal)

        list(_pool(nthreads).map(work, [items[i::nthreads] for i in range(nthreads)]))
    return out.reshape(B, H, Tq, D)
