"""Tiled attention with an online softmax (flash-attention style) on the CPU.

Work item = one (batch*head, block of queries). For each key tile: S = Q_blk K_tileᵀ (BLAS),
a Numba pass turns S into P = 2^(S - running max) in place (the max updated lazily, see
online_softmax_step) and rescales the running sum and output, then O_blk += P V_tile (BLAS). Extra memory per worker: O(block·D + block·tile), never
Tq×Tk. Work items run on a pool of Python threads (Numba and BLAS both release the GIL), each
with single-threaded BLAS for its small GEMMs (OpenBLAS's per-thread setting), so both cores
stay busy without oversubscription. Every work item is computed the same way whichever thread
runs it, so the result does not depend on the thread count."""
from __future__ import annotations

import math
import threading

import numba
import numpy as np
from numba import njit

from .cpu_blas import run_items
from .cpu_math import FMA_FLAGS, exp2f

KEY_TILE = 512
TILE_ELEMS = 1 << 18  # query block * key tile (1 MB of float32 scores; 512x512 GEMMs run near peak)


@njit(cache=True, error_model="numpy", nogil=True)
def _row_max(row, n):
    """max(row[:n]) with 8 independent running maxima (LLVM does not vectorise a float max
    reduction written as one chain; exact either way, max does not round)."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = row[0]
    j = 0
    while j + 8 <= n:
        m0, m1, m2, m3 = max(m0, row[j]), max(m1, row[j + 1]), max(m2, row[j + 2]), max(m3, row[j + 3])
        m4, m5, m6, m7 = max(m4, row[j + 4]), max(m5, row[j + 5]), max(m6, row[j + 6]), max(m7, row[j + 7])
        j += 8
    m = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for jj in range(j, n):
        m = max(m, row[jj])
    return m


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract"}, nogil=True)
def _row_sum(row, n):
    # reassoc: vectorised, in an order fixed at compile time (never by the thread count)
    total = np.float32(0)
    for j in range(n):
        total += row[j]
    return total


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def _exp2_shifted(row, n, m):
    for j in range(n):
        row[j] = exp2f(row[j] - m)


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def _scores_row(q_row, kt_tile, row, n):
    """row[:n] = q_row @ kt_tile[:, :n] again (the rare redo of a row, see online_softmax_step)."""
    for j in range(n):
        row[j] = 0
    for d in range(q_row.size):
        qd = q_row[d]
        for j in range(n):
            row[j] += qd * kt_tile[d, j]


LAZY_LIMIT = np.float32(2.0**16)


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def online_softmax_step(s, m, l, acc, qb, kt_tile, q0, k0, causal):
    """s (bq, bk): scores in log2 units of queries q0.. (qb) against keys k0.. (kt_tile), replaced
    in place by the weights. m, l (bq,) running reference max and sum; acc (bq, D) output.

    The reference max is updated lazily: a row's first tile sets it to that tile's max; later
    tiles reuse it while the row's weights stay <= 2^16 (seen from their sum, which is needed
    anyway), which skips a max pass over most tiles. When a score rises more than 16 above the
    reference, the row's scores are recomputed (they were overwritten), the max is renewed and
    the running sum and output are rescaled. Weights are relative to the reference max, so the
    precision is that of the usual online softmax."""
    bq, bk = s.shape
    for i in range(bq):
        kend = bk
        if causal:
            kend = min(bk, max(q0 + i - k0 + 1, 0))  # keys k0+j with k0+j <= q0+i
        row = s[i]
        if l[i] > 0 and kend > 0:
            _exp2_shifted(row, kend, m[i])
            total = _row_sum(row, kend)
            if total <= LAZY_LIMIT:
                l[i] += total
                for j in range(kend, bk):
                    row[j] = 0
                continue
            _scores_row(qb[i], kt_tile, row, kend)
        for j in range(kend, bk):
            row[j] = 0
        if kend == 0:  # every key of this tile is in this query's future
            continue
        m_new = max(m[i], _row_max(row, kend))
        _exp2_shifted(row, kend, m_new)
        alpha = exp2f(m[i] - m_new)  # 0 on the first tile (m = -inf)
        l[i] = l[i] * alpha + _row_sum(row, kend)
        for d in range(acc.shape[1]):
            acc[i, d] *= alpha
        m[i] = m_new


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def add_into(acc, x):
    for i in range(acc.shape[0]):
        for d in range(acc.shape[1]):
            acc[i, d] += x[i, d]


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def finish_rows(acc, l, out):
    for i in range(acc.shape[0]):
        inv = np.float32(1.0) / l[i]
        for d in range(acc.shape[1]):
            out[i, d] = acc[i, d] * inv


_workspace = threading.local()
def _buffers(bq: int, bk: int, D: int):
    """Per-thread score and P·V buffers, reused across tiles and calls: a fresh 1 MB array per
    tile costs page faults comparable to the GEMM that fills it."""
    need = bq * bk + bq * D
    buf = getattr(_workspace, "buf", None)
    if buf is None or buf.size < need:
        buf = _workspace.buf = np.empty(need, np.float32)
    return buf, bq * bk


def _run_item(q, kt, v, out, bh, q0, bq, causal):
    """Attention for queries q0..q0+bq of head bh. q already scaled by scale*log2(e); kt (BH, D, Tk)."""
    D, Tk = kt.shape[1:]
    qb = q[bh, q0 : q0 + bq]
    m = np.full(bq, -np.inf, np.float32)
    l = np.zeros(bq, np.float32)
    acc = np.zeros((bq, D), np.float32)
    buf, n_scores = _buffers(bq, min(KEY_TILE, Tk), D)
    pv = buf[n_scores : n_scores + bq * D].reshape(bq, D)
    kstop = min(Tk, q0 + bq) if causal else Tk
    for k0 in range(0, kstop, KEY_TILE):
        k1 = min(k0 + KEY_TILE, kstop)
        kt_tile = kt[bh, :, k0:k1]
        s = buf[: bq * (k1 - k0)].reshape(bq, k1 - k0)
        np.matmul(qb, kt_tile, out=s)  # (bq, bk); kᵀ contiguous per head: ~1.6x faster than k.T
        online_softmax_step(s, m, l, acc, qb, kt_tile, q0, k0, causal)
        np.matmul(s, v[bh, k0:k1], out=pv)
        add_into(acc, pv)
    finish_rows(acc, l, out[bh, q0 : q0 + bq])


def attention(q, k, v, scale, causal):
    """q (B, H, Tq, D), k/v (B, H, Tk, D) float32 contiguous -> (B, H, Tq, D)."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    qs = (q * np.float32(scale / math.log(2.0))).reshape(B * H, Tq, D)
    kt = np.ascontiguousarray(k.reshape(B * H, Tk, D).transpose(0, 2, 1))  # (BH, D, Tk)
    v3 = v.reshape(B * H, Tk, D)
    out = np.empty((B * H, Tq, D), np.float32)
    bq = max(16, min(1024, TILE_ELEMS // min(Tk, KEY_TILE)))
    items = [(bh, q0, min(bq, Tq - q0)) for bh in range(B * H) for q0 in range(0, Tq, bq)]
    run_items(lambda it: _run_item(qs, kt, v3, out, *it, causal), items, numba.get_num_threads())
    return out.reshape(B, H, Tq, D)
