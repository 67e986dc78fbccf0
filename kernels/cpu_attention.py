"""Tiled attention with an online softmax (flash-attention style) on the CPU.

One Numba kernel per (head, range of queries) walks blocks of bq queries; for each tile of bk
keys: S = Q_blk K_tileᵀ (sgemm, called from inside the kernel), a pass turns S into
P = 2^(S - running max) in place (the max updated lazily, see online_softmax_step) and rescales
the running sum and output, then O_blk += P V_tile (sgemm with beta = 1). Extra memory per
worker: O(bq·D + bq·bk), never Tq×Tk.

Tile sizes keep every GEMM at M·N·K <= 10^6, where OpenBLAS switches to its small-matrix kernels
(no packing): at D = 40 they run at ~150 GFLOP/s against ~120 for 512×512 tiles on this
machine's AVX-512 cores. Tiles that small make ~700 tiles per head, so the tile loop lives in
Numba: a Python loop paid ~3 µs per call, four calls per tile.

Work items (head, query range) run on a pool of Python threads (cpu_blas.run_items, BLAS on one thread).
Query blocks start at multiples of bq whatever the thread count, and every block is computed the
same way whichever thread runs it, so the result does not depend on the thread count."""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit

from . import cpu_blas
from .cpu_blas import run_items, sgemm
from .cpu_math import FMA_FLAGS, exp2f, prefer_wide_vectors, row_max

GEMM_BUDGET = 1_000_000  # M·N·K at or below which OpenBLAS uses its small-matrix sgemm kernels


def tile_sizes(D: int, Tk: int) -> tuple:
    """(bq, bk): query block and key tile, bq·bk·D <= GEMM_BUDGET. Scanned at SD's head sizes
    (D = 40, 80, 160 at T = 4096, 1024, 256): a broad optimum, these within 3% of the best."""
    bk = min(Tk, 256 if D <= 64 else 128 if D <= 96 else 64)
    bq = max(16, min(512, GEMM_BUDGET // (D * bk)) // 16 * 16)
    return bq, bk


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS | {"reassoc"}, nogil=True)
def _exp2_shifted_sum(s, i, n, m):
    """s[i, :n] = 2^(s[i, :n] - m), returns their sum. reassoc lets the sum vectorise, in an order
    fixed at compile time (never by the thread count); exp2f is written to stay exact under it.
    Rows are passed as (s, i), not as views s[i]: a view costs two atomic reference-count updates,
    noticeable against the ~50 ns of work in a 256-key row."""
    prefer_wide_vectors()
    total = np.float32(0)
    for j in range(n):
        e = exp2f(s[i, j] - m)
        s[i, j] = e
        total += e
    return total


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def _scores_row(qb, kt_tile, s, i, n):
    """s[i, :n] = qb[i] @ kt_tile[:, :n] again (the rare redo of a row, see online_softmax_step)."""
    for j in range(n):
        s[i, j] = 0
    for d in range(qb.shape[1]):
        qd = qb[i, d]
        for j in range(n):
            s[i, j] += qd * kt_tile[d, j]


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
        if l[i] > 0 and kend > 0:
            total = _exp2_shifted_sum(s, i, kend, m[i])
            if total <= LAZY_LIMIT:
                l[i] += total
                for j in range(kend, bk):
                    s[i, j] = 0
                continue
            _scores_row(qb, kt_tile, s, i, kend)
        for j in range(kend, bk):
            s[i, j] = 0
        if kend == 0:  # every key of this tile is in this query's future
            continue
        m_new = max(m[i], row_max(s, i, kend))
        total = _exp2_shifted_sum(s, i, kend, m_new)
        alpha = exp2f(m[i] - m_new)  # 0 on the first tile (m = -inf)
        l[i] = l[i] * alpha + total
        for d in range(acc.shape[1]):
            acc[i, d] *= alpha
        m[i] = m_new


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def finish_rows(acc, l, out):
    for i in range(acc.shape[0]):
        inv = np.float32(1.0) / l[i]
        for d in range(acc.shape[1]):
            out[i, d] = acc[i, d] * inv


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def attend_rows(fn, kind, q, kt, v, out, q0, q1, bq, bk, causal):
    """out[q0:q1] for one head. q (Tq, D) pre-scaled by scale·log2(e); kt (D, Tk) = kᵀ; v (Tk, D);
    all C-contiguous. q0 a multiple of bq (block boundaries independent of the work split)."""
    D, Tk = kt.shape
    s_buf = np.empty(bq * bk, np.float32)
    acc = np.empty((bq, D), np.float32)
    m = np.empty(bq, np.float32)
    l = np.empty(bq, np.float32)
    for qa in range(q0, q1, bq):
        nq = min(bq, q1 - qa)
        acc[:] = 0
        m[:] = -np.inf
        l[:] = 0
        kstop = min(Tk, qa + nq) if causal else Tk
        for k0 in range(0, kstop, bk):
            nk = min(bk, kstop - k0)
            s = s_buf[: nq * nk].reshape((nq, nk))
            sgemm(fn, kind, nq, nk, D, q.ctypes.data + 4 * qa * D, D, kt.ctypes.data + 4 * k0, Tk,
                  np.float32(0), s.ctypes.data, nk)  # (nq, nk) scores, log2 units
            online_softmax_step(s, m[:nq], l[:nq], acc[:nq], q[qa : qa + nq], kt[:, k0 : k0 + nk], qa, k0, causal)
            sgemm(fn, kind, nq, D, nk, s.ctypes.data, nk, v.ctypes.data + 4 * k0 * D, D,
                  np.float32(1), acc.ctypes.data, D)  # acc (nq, D) += P V_tile
        finish_rows(acc[:nq], l[:nq], out[qa : qa + nq])


def attention(q, k, v, scale, causal):
    """q (B, H, Tq, D), k/v (B, H, Tk, D) float32 contiguous -> (B, H, Tq, D)."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    BH = B * H
    qs = (q * np.float32(scale / math.log(2.0))).reshape(BH, Tq, D)
    kt = np.ascontiguousarray(k.reshape(BH, Tk, D).transpose(0, 2, 1))  # (BH, D, Tk)
    v3 = np.ascontiguousarray(v.reshape(BH, Tk, D))
    out = np.empty((BH, Tq, D), np.float32)
    bq, bk = tile_sizes(D, Tk)
    threads = numba.get_num_threads()
    pieces = -(-4 * threads // BH)  # query ranges per head: >= 4 items per thread when heads are few
    step = -(-(-(-Tq // pieces)) // bq) * bq  # ceil(Tq / pieces) rounded up to whole blocks
    items = [(bh, q0, min(q0 + step, Tq)) for bh in range(BH) for q0 in range(0, Tq, step)]

    def work(item):
        bh, q0, q1 = item
        attend_rows(cpu_blas.SGEMM_ADDR, cpu_blas.SGEMM_KIND, qs[bh], kt[bh], v3[bh], out[bh], q0, q1, bq, bk, causal)

    run_items(work, items, threads)
    return out.reshape(B, H, Tq, D)
