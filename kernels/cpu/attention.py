"""Tiled attention with an online softmax (flash-attention style) on the CPU.

One Numba kernel per (head, range of queries) walks blocks of bq queries, computed transposed;
for each tile of bk keys: Sᵀ = K_tile Q_blkᵀ (sgemm, called from inside the kernel), a pass down
the columns turns Sᵀ into Pᵀ = 2^(Sᵀ - running max) in place (the max updated lazily, see
online_softmax_step) and rescales the running sum and output, then O_blkᵀ += V_tileᵀ Pᵀ (sgemm
with beta = 1). Extra memory per worker: O(bq·D + bq·bk), never Tq×Tk.

Tile sizes keep every GEMM at M·N·K <= 10^6, where OpenBLAS switches to its small-matrix kernels
(no packing): at D = 40 they run at ~150 GFLOP/s against ~120 for 512×512 tiles on this
machine's AVX-512 cores. Tiles that small make ~1000 tiles per head, so the tile loop lives in
Numba: a Python loop paid ~3 µs per call, four calls per tile.

Work items (head, query range) run on a pool of Python threads (cpu_blas.run_items, BLAS on one
thread). Query blocks start at multiples of bq whatever the thread count, and every block is
computed the same way whichever thread runs it, so the result does not depend on the thread
count."""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit

from minriff.kernels.cpu import blas as cpu_blas
from minriff.kernels.cpu.blas import run_items, sgemm
from minriff.kernels.cpu.vecmath import FMA_FLAGS, exp2f, prefer_wide_vectors


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def tile_sizes(D: int, Tk: int) -> tuple:
    """(bq, bk): query block and key tile; bq·bk·D stays within about 10^6 (the small-matrix
    sgemm range, see above) for D up to ~240. Scanned (transposed kernel) at SD's head sizes,
    D = 40, 80, 160 at T = 4096, 1024, 256, and cross-attention to 77 keys: 64 queries (four
    16-lane vectors per score row) with these key tiles were within the machine's noise (~3%)
    of the best everywhere."""
    bk = min(Tk, 256 if D <= 64 else 128 if D <= 96 else 64)
    return 64, bk


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def _first_valid(k0, i, qa, nq, causal):
    """First query column j of the tile that key row i (key k0 + i) may attend: causal keys
    only reach queries qa + j >= k0 + i."""
    return min(nq, max(k0 + i - qa, 0)) if causal else 0


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def _column_max(st, m, k0, qa, causal):
    """m[j] = max over the valid key rows of column j (elementwise across j: vectorises)."""
    prefer_wide_vectors()
    nk, nq = st.shape
    for j in range(nq):
        m[j] = -np.inf
    for i in range(nk):
        j0 = _first_valid(k0, i, qa, nq, causal)
        if j0 == 0:  # see _exp2_columns
            for j in range(nq):
                m[j] = max(m[j], st[i, j])
        else:
            for j in range(j0, nq):
                m[j] = max(m[j], st[i, j])


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def _exp2_columns(st, m, colsum, k0, qa, causal):
    """st[i, j] = 2^(st[i, j] - m[j]) for valid (key, query) pairs, 0 for the others;
    colsum[j] = the column's sum, accumulated row by row (a fixed order: no reassociation).
    Two loops per row: with the sum in the exp loop LLVM does not vectorise (0.21 ns per element
    split, measured here)."""
    prefer_wide_vectors()
    nk, nq = st.shape
    for j in range(nq):
        colsum[j] = 0
    for i in range(nk):
        j0 = _first_valid(k0, i, qa, nq, causal)
        if j0 == 0:  # loops from a literal 0: Numba then knows j >= 0 and emits no negative-
            for j in range(nq):  # index wraparound, which would stop vectorisation (3 ns/element)
                st[i, j] = exp2f(st[i, j] - m[j])
            for j in range(nq):
                colsum[j] += st[i, j]
            continue
        for j in range(j0):  # causal tiles on the diagonal
            st[i, j] = 0
        for j in range(j0, nq):
            st[i, j] = exp2f(st[i, j] - m[j])
            colsum[j] += st[i, j]


LAZY_LIMIT = np.float32(2.0**16)


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def online_softmax_step(st, m, l, acc_t, colsum, k_tile, qt, qa, k0, causal):
    """st (nk, nq): scores in log2 units of keys k0.. (rows, k_tile) against queries qa..
    (columns, qt[:, qa + j]), replaced in place by the weights. m, l (nq,) running reference max
    and sum per query; acc_t (D, nq) the output, transposed.

    The reference max is updated lazily: the first key tile sets it to that tile's max; later
    tiles reuse it while a query's weights stay <= 2^16 (seen from their sum, which is needed
    anyway), which skips a max pass over most tiles. When a score rises more than 16 above the
    reference, that query's column is recomputed (it was overwritten), the max renewed and the
    running sum and output rescaled. Weights are relative to the reference max, so the precision
    is that of the usual online softmax."""
    nk, nq = st.shape
    if k0 == 0:  # every query's first tile (causal too: key 0 is in every query's past)
        _column_max(st, m, k0, qa, causal)
        _exp2_columns(st, m, colsum, k0, qa, causal)
        for j in range(nq):
            l[j] = colsum[j]
        return
    _exp2_columns(st, m, colsum, k0, qa, causal)
    for j in range(nq):
        if colsum[j] <= LAZY_LIMIT:  # also false for inf
            l[j] += colsum[j]
            continue
        iend = min(nk, qa + j - k0 + 1) if causal else nk  # valid keys of this query
        top = -np.inf
        for i in range(iend):
            dot = np.float32(0)
            for d in range(k_tile.shape[1]):
                dot += k_tile[i, d] * qt[d, qa + j]
            st[i, j] = dot
            top = max(top, dot)
        m_new = max(m[j], top)
        total = np.float32(0)
        for i in range(iend):
            e = exp2f(st[i, j] - m_new)
            st[i, j] = e
            total += e
        alpha = exp2f(m[j] - m_new)
        l[j] = l[j] * alpha + total
        for d in range(acc_t.shape[0]):
            acc_t[d, j] *= alpha
        m[j] = m_new


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def attend_rows(fn, kind, qt, k, vt, out, q0, q1, bq, bk, causal):
    """out[q0:q1] (rows: queries) for one head, computed transposed: per tile the scores are
    Sᵀ = K_tile Qᵀ (keys × queries), the softmax runs down the columns (every loop vectorises
    across queries), and Oᵀ += V_tileᵀ Pᵀ. qt (D, Tq) = (q · scale · log2 e)ᵀ; k (Tk, D);
    vt (D, Tk) = vᵀ; unit column strides, k C-contiguous. q0 a multiple of bq (blocks independent
    of the split)."""
    D, Tq = qt.shape
    Tk = k.shape[0]
    ldq, ldv = qt.strides[0] // 4, vt.strides[0] // 4  # row strides (padded, see attention)
    st_buf = np.empty(bk * bq, np.float32)
    acc_t = np.empty((D, bq), np.float32)
    m = np.empty(bq, np.float32)
    l = np.empty(bq, np.float32)
    colsum = np.empty(bq, np.float32)
    for qa in range(q0, q1, bq):
        nq = min(bq, q1 - qa)
        acc_t[:] = 0
        kstop = min(Tk, qa + nq) if causal else Tk
        for k0 in range(0, kstop, bk):
            nk = min(bk, kstop - k0)
            st = st_buf[: nk * nq].reshape((nk, nq))
            sgemm(fn, kind, nk, nq, D, k.ctypes.data + 4 * k0 * D, D, qt.ctypes.data + 4 * qa, ldq,
                  np.float32(0), st.ctypes.data, nq)  # (nk, nq) scores, log2 units
            online_softmax_step(st, m, l, acc_t, colsum, k[k0 : k0 + nk], qt, qa, k0, causal)
            sgemm(fn, kind, D, nq, nk, vt.ctypes.data + 4 * k0, ldv, st.ctypes.data, nq,
                  np.float32(1), acc_t.ctypes.data, bq)  # acc_t (D, nq) += V_tileᵀ P_tileᵀ
        for j in range(nq):
            inv = np.float32(1.0) / l[j]
            for d in range(D):
                out[qa + j, d] = acc_t[d, j] * inv


def _transposed(x, scale):
    """(B, H, T, D), any strides (the model's heads are a view of (B, T, H·D)) -> (B·H, D, T),
    times scale, in one pass, into a buffer with rows padded by 64 bytes: a GEMM operand of D rows
    4096 floats apart would map every row to the same L1 cache sets."""
    B, H, T, D = x.shape
    buf = np.empty((B * H, D, T + 16), np.float32)[:, :, :T]
    dst = buf.reshape(B, H, D, T)
    if scale is None:
        np.copyto(dst, x.transpose(0, 1, 3, 2))
    else:
        np.multiply(x.transpose(0, 1, 3, 2), scale, out=dst)
    return buf


def attention(q, k, v, scale, causal):
    """q (B, H, Tq, D), k/v (B, H, Tk, D) float32, any strides -> (B, H, Tq, D) (a view of a
    (B, Tq, H, D) array)."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    BH = B * H
    q_scale = np.float32(scale / math.log(2.0))
    # written as (B, Tq, H, D) and returned as its (B, H, Tq, D) view: the model merges heads
    # back into (B, Tq, H·D) next, which is then a free reshape instead of a copy
    out = np.empty((B, Tq, H, D), np.float32)
    bq, bk = tile_sizes(D, Tk)
    threads = numba.get_num_threads()
    pieces = _ceil_div(4 * threads, BH)  # query ranges per head: >= 4 items per thread when heads are few
    step = _ceil_div(_ceil_div(Tq, pieces), bq) * bq  # ceil(Tq / pieces) rounded up to whole blocks
    items = [(bh, q0, min(q0 + step, Tq)) for bh in range(BH) for q0 in range(0, Tq, step)]
    # One item per head: each item lays out its own head's operands, so the copies run on every
    # thread (done up front, on one core, they took ~0.2 s of a UNet step). Alone, medians of 7,
    # two runs each: (2,8,1024,80) 24 against 28-29 ms, (2,8,256,160) 4.6 against 5.5-6.6, 4096
    # queries to 77 keys 8.1 against 10.8-11.7; (2,8,4096,40) within the noise (191-211 against
    # 203-221 ms). Several items per head share copies made up front.
    per_head = len(items) == BH
    if not per_head:
        qt = _transposed(q, q_scale)  # (BH, D, Tq)
        k3 = np.ascontiguousarray(k).reshape(BH, Tk, D)
        vt = _transposed(v, None)  # (BH, D, Tk)

    def work(item):
        bh, q0, q1 = item
        b, h = divmod(bh, H)
        if per_head:
            qh, kh = _transposed(q[b : b + 1, h : h + 1], q_scale)[0], np.ascontiguousarray(k[b, h])
            vh = _transposed(v[b : b + 1, h : h + 1], None)[0]
        else:
            qh, kh, vh = qt[bh], k3[bh], vt[bh]
        attend_rows(cpu_blas.SGEMM_ADDR, cpu_blas.SGEMM_KIND, qh, kh, vh, out[b, :, h], q0, q1, bq, bk, causal)

    run_items(work, items, threads)
    return out.transpose(0, 2, 1, 3)
