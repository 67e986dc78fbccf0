"""3x3 stride-1 convolution by Winograd's minimal filtering F(4x4, 3x3) on the CPU.

Each 4x4 block of output pixels (a "tile") is computed from the 6x6 input patch under it,
Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A, with the interpolation points 0, ±1, ±2 and ∞ (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2015):

    Bᵀ = [4  0 -5  0  1  0]   G = [ 1/4     0     0  ]   Aᵀ = [1  1  1  1  1  0]
         [0 -4 -4  1  1  0]       [-1/6  -1/6  -1/6 ]        [0  1 -1  2 -2  0]
         [0  4 -4 -1  1  0]       [-1/6   1/6  -1/6 ]        [0  1  1  4  4  0]
         [0 -2 -1  2  1  0]       [1/24  1/12  1/6  ]        [0  1 -1  8 -8  1]
         [0  2 -1 -2  1  0]       [1/24 -1/12  1/6  ]
         [0  4  0 -5  0  1]       [  0     0     1  ]

(BT, G, AT below; tests/kernels/test_winograd4.py checks them against a direct conv in float64).
Summed over input channels that is 36 GEMMs  M[e] (O, T) = U[e] (O, C) @ V[e] (C, T): 36
multiplies per 16 outputs (2.25 per output, F(2x2, 3x3) needs 4), and V holds 2.25 floats per
output pixel instead of 4. The price: U is 36·O·C floats (4x the weights: 177 MB for SD's
1920 -> 640 conv, written per call unless kept by kernels.weight_cache), and float32 accuracy. Max error
relative to |x| conv |w| at SD depths (C = 256..1280): 1.4-2.0e-6, against 0.7-1.1e-7 for F(2x2,
3x3). Measured stage by stage in float64 emulation, rounding U and V to float32 costs 1e-7; the
rest comes from the float32 GEMMs, whose sums are of products the transforms inflate (Bᵀ's
entries reach 5, Aᵀ's 8) before Aᵀ · A cancels them again, so the order of the transforms'
additions hardly matters, and scaling G (24·G, undone in A) was not tried: it would move the
1/24s, not shrink the GEMMs' sums. G's sixths are not exact in
binary: U = G g Gᵀ is computed in float64 and rounded once (3.8 ms at 640 x 640 channels).
Near image borders an output's error follows its tile's magnitudes, not its own window's.

Work items (cpu_blas.run_items threads, BLAS single-threaded), as winograd.py:
- batches with many tiles (> BATCH_TILES; SD's 64 px layers, the VAE's big ones): a band of
  winograd.TILES_PER_ITEM tiles of one image (winograd.run_row_bands, shared with F(2x2, 3x3)):
  pad the band's input rows, input transform into V, 36 sgemm calls, output transform (plus
  bias) straight into y.
- fewer tiles (SD's 32 px layers): the whole batch's V first (items: blocks of input channels),
  then an item is a block of output channels (channel_block), each doing 36 GEMMs over all tiles.
Items depend on the shape only: results do not depend on the thread count.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from minriff.kernels.cpu import blas as cpu_blas
from minriff.kernels.cpu import weightcache
from minriff.kernels.cpu.blas import run_items
from minriff.kernels.cpu.half import widen
from minriff.kernels.cpu.vecmath import FMA_FLAGS, prefer_wide_vectors
from minriff.kernels.cpu.winograd import pad_band, position_gemms, run_row_bands
from minriff.kernels.cpu.workspace import buffer

BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)

_SIXTH = 1.0 / 6.0
_2, _4, _5, _8 = np.float32(2), np.float32(4), np.float32(5), np.float32(8)  # float32 * int would be float64
BATCH_TILES = 256  # at most this many tiles in the whole batch: items are blocks of output channels
CHANNEL_BLOCK = 320  # output channels per item below that, at most (channel_block)
INPUT_BLOCK = 64  # input channels per item of that path's input transform


@njit(inline="always", error_model="numpy")
def _g6(a, b, c):
    """G (a, b, c)ᵀ in float64 (products by the rounded 1/6 and 1/24 stay within float64's
    precision: rounding to float32 afterwards is the only loss that matters)."""
    s = a + c
    q, h = 0.25 * a + c, 0.5 * b
    return 0.25 * a, -(s + b) * _SIXTH, (b - s) * _SIXTH, (q + h) * _SIXTH, (q - h) * _SIXTH, c


@njit(cache=True, error_model="numpy", parallel=True)
def transform_weights(w, u):
    """w (O, C, 3, 3) float32 or float16 bits -> u (36, O, C) float32: u[6r + s, o, c] =
    (G w[o, c] Gᵀ)[r, s], computed in float64 and rounded once. Per output channel: the taps
    gathered into (9, C) float64, then loops over c (contiguous, vectorised) for each row r."""
    O, C = w.shape[0], w.shape[1]
    for o in prange(O):
        taps = np.empty((9, C), np.float64)
        gg = np.empty((18, C), np.float64)  # G g: row r, column j at 3r + j
        for c in range(C):
            for k in range(9):
                taps[k, c] = np.float64(widen(w[o, c, k // 3, k % 3]))
        for j in range(3):
            for c in range(C):
                col = _g6(taps[j, c], taps[3 + j, c], taps[6 + j, c])
                for r in range(6):
                    gg[3 * r + j, c] = col[r]
        for r in range(6):
            for c in range(C):
                e = _g6(gg[3 * r, c], gg[3 * r + 1, c], gg[3 * r + 2, c])
                for s in range(6):
                    u[6 * r + s, o, c] = np.float32(e[s])


@njit(inline="always", error_model="numpy", fastmath=FMA_FLAGS)
def _bt(r0, r1, r2, r3, r4, r5):
    """Bᵀ (r0..r5)ᵀ."""
    a, b = r4 - _4 * r2, r3 - _4 * r1
    c, d = r4 - r2, _2 * (r3 - r1)
    return _4 * r0 - _5 * r2 + r4, a + b, a - b, c + d, c - d, _4 * r1 - _5 * r3 + r5


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def input_transform(xp, tr0, tr1, tw, rows, v):
    """xp (C, Hp, Wp) zero-padded input -> v (36, C, T): v[6r + s, c, t] = (Bᵀ d B)[r, s] for the
    patch d = xp[c, 4ti : 4ti + 6, 4tj : 4tj + 6] of tile t = (ti - tr0) * tw + tj. rows (6, Wp)
    scratch: Bᵀ on six input rows (all columns at once), then B along each (stride-4 reads)."""
    prefer_wide_vectors()
    C, _, Wp = xp.shape
    for c in range(C):
        for ti in range(tr0, tr1):
            x0, x1, x2, x3, x4, x5 = (xp[c, 4 * ti], xp[c, 4 * ti + 1], xp[c, 4 * ti + 2], xp[c, 4 * ti + 3],
                                      xp[c, 4 * ti + 4], xp[c, 4 * ti + 5])
            for k in range(Wp):
                t = _bt(x0[k], x1[k], x2[k], x3[k], x4[k], x5[k])
                for i in range(6):
                    rows[i, k] = t[i]
            base = (ti - tr0) * tw
            for i in range(6):
                row = rows[i]
                for tj in range(tw):
                    k = 4 * tj
                    t = _bt(row[k], row[k + 1], row[k + 2], row[k + 3], row[k + 4], row[k + 5])
                    for s in range(6):
                        v[6 * i + s, c, base + tj] = t[s]


@njit(inline="always", error_model="numpy", fastmath=FMA_FLAGS)
def _at(m0, m1, m2, m3, m4, m5):
    """Aᵀ (m0..m5)ᵀ."""
    a, b, c, d = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    return m0 + a + c, b + _2 * d, a + _4 * c, b + _8 * d + m5


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def output_transform(m, tr0, tr1, tw, bias, has_bias, y, p):
    """m (36, O, T) -> y (O, Ho, Wo) for the tile rows tr0 .. tr1: the 4x4 block Aᵀ m A (+ bias)
    of each tile, clipped at the bottom and right edges. p (4, 6, tw) scratch: Aᵀ m for a row of
    tiles (contiguous loops over tiles), then A along it."""
    prefer_wide_vectors()
    O, Ho, Wo = y.shape
    for o in range(O):
        bo = bias[o] if has_bias else np.float32(0)
        for ti in range(tr0, tr1):
            base = (ti - tr0) * tw
            for s in range(6):
                for tj in range(tw):
                    t = base + tj
                    q = _at(m[s, o, t], m[6 + s, o, t], m[12 + s, o, t], m[18 + s, o, t], m[24 + s, o, t],
                            m[30 + s, o, t])
                    p[0, s, tj], p[1, s, tj], p[2, s, tj], p[3, s, tj] = q
            for r in range(4):
                oh = 4 * ti + r
                if oh >= Ho:
                    break
                yr = y[o, oh]
                for tj in range(tw):
                    q = _at(p[r, 0, tj], p[r, 1, tj], p[r, 2, tj], p[r, 3, tj], p[r, 4, tj], p[r, 5, tj])
                    ow = 4 * tj
                    if ow + 3 < Wo:
                        yr[ow], yr[ow + 1], yr[ow + 2], yr[ow + 3] = q[0] + bo, q[1] + bo, q[2] + bo, q[3] + bo
                    else:
                        for k in range(Wo - ow):
                            yr[ow + k] = q[k] + bo


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def winograd4_rows(fn, kind, xp, u, bias, has_bias, y, tr0, tr1, tw, v, m):
    """y[:, 4*tr0 : 4*tr1] of one image. xp (C, Hp, Wp) padded input, u (36, O, C) transformed
    weights; v (36, C, >= T), m (36, O, >= T) scratch for T = (tr1 - tr0) * tw tiles."""
    O = u.shape[1]
    T = (tr1 - tr0) * tw
    rows = np.empty((6, xp.shape[2]), np.float32)
    input_transform(xp, tr0, tr1, tw, rows, v[:, :, :T])
    position_gemms(fn, kind, u, 0, O, v, v.shape[2], m, m.shape[2], T)
    output_transform(m[:, :, :T], tr0, tr1, tw, bias, has_bias, y, np.empty((4, 6, tw), np.float32))


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def winograd4_channels(fn, kind, v, u, o0, o1, bias, has_bias, y, th, tw, m):
    """y[:, o0:o1] of every image from the whole batch's transformed input v (36, C, N·th·tw):
    36 GEMMs (o1-o0, C) @ (C, N·th·tw) into m (36, >= o1-o0, >= N·th·tw), then the output
    transform image by image."""
    ob = o1 - o0
    per_image = th * tw
    position_gemms(fn, kind, u, o0, ob, v, v.strides[1] // 4, m, m.strides[1] // 4, v.shape[2])
    p = np.empty((4, 6, tw), np.float32)
    for n in range(y.shape[0]):
        output_transform(m[:, :ob, n * per_image : (n + 1) * per_image], 0, th, tw,
                         bias[o0:o1] if has_bias else bias, has_bias, y[n, o0:o1], p)


def channel_block(O: int) -> int:
    """Output channels per item of the channel path: an even number of equal blocks (two threads
    here) of at most CHANNEL_BLOCK. Measured at SD's 32x32 layers against blocks of 128: 1.05-1.2x
    (fewer re-packings of V per GEMM); the VAE's (1,512,64,64) with 320 + 192 was 1.09x slower."""
    blocks = -(-O // CHANNEL_BLOCK)
    blocks += blocks % 2 if O > 1 else 0
    return -(-O // blocks)


def transformed(w) -> np.ndarray:
    """U (36, O, C) float32 of w (O, C, 3, 3) float32 or float16 bits."""
    u = weightcache.empty((36, w.shape[0], w.shape[1]))
    transform_weights(w, u)
    return u


def conv3x3(x, w, b, pads, y, u=None):
    """y (N, O, Ho, Wo) = conv of x (N, C, H, W) with w (O, C, 3, 3), stride 1, pads (top, bottom,
    left, right); float32 contiguous (w may be float16 bits, half.bits_or_float32). u: the
    weights already transformed (36, O, C) float32 (`transformed(w)`, e.g. kept by weightcache),
    else computed here."""
    N, C, H, W = x.shape
    O = w.shape[0]
    top, bottom, left, right = pads
    Ho, Wo = H + top + bottom - 2, W + left + right - 2
    th, tw = -(-Ho // 4), -(-Wo // 4)
    Hp, Wp = 4 * th + 2, 4 * tw + 2  # whole tiles: the last patches may read zeros past the padding
    if u is None:
        u = transformed(w)
    elif u.shape != (36, O, C) or u.dtype != np.float32 or not u.flags.c_contiguous:
        raise ValueError(f"winograd4: transformed weights must be float32 (36, {O}, {C}), got {u.dtype} {u.shape}")
    has_bias = b is not None
    bias = b if has_bias else np.zeros(1, np.float32)
    threads = numba.get_num_threads()
    fn, kind = cpu_blas.SGEMM_ADDR, cpu_blas.SGEMM_KIND
    if N * th * tw <= BATCH_TILES:
        T = N * th * tw
        v = np.empty((36, C, T), np.float32)  # not a workspace buffer: filled by several threads
        blocks = [(n, c0, min(c0 + INPUT_BLOCK, C)) for n in range(N) for c0 in range(0, C, INPUT_BLOCK)]

        def transform_input(item):  # the input transform in blocks of channels
            n, c0, c1 = item
            xp = buffer("band", (c1 - c0) * Hp * Wp).reshape(c1 - c0, Hp, Wp)
            pad_band(x[n, c0:c1], 0, top, left, xp)
            input_transform(xp, 0, th, tw, np.empty((6, Wp), np.float32), v[:, c0:c1, n * th * tw : (n + 1) * th * tw])

        run_items(transform_input, blocks, threads)
        size = channel_block(O)
        items = [(o0, min(o0 + size, O)) for o0 in range(0, O, size)]

        def by_channels(item):
            m = buffer("m", 36 * size * T).reshape(36, size, T)
            winograd4_channels(fn, kind, v, u, item[0], item[1], bias, has_bias, y, th, tw, m)

        run_items(by_channels, items, threads)
        return
    run_row_bands(winograd4_rows, 4, x, u, bias, has_bias, pads, th, tw, Wp, y)
