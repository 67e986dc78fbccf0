"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) on the CPU.

Each 2x2 block of output pixels (a "tile") is computed from the 4x4 input patch under it:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        (g the 3x3 filter, d the 4x4 patch)

    Bᵀ = [1  0 -1  0]    G = [ 1    0    0 ]    Aᵀ = [1  1  1  0]
         [0  1  1  0]        [1/2  1/2  1/2]         [0  1 -1 -1]
         [0 -1  1  0]        [1/2 -1/2  1/2]
         [0  1  0 -1]        [ 0    0    1 ]

(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015). Summed over input
channels, the elementwise product becomes 16 independent GEMMs, one per position e of the 4x4
transformed patch:  M[e] (O, T) = U[e] (O, C) @ V[e] (C, T)  for T tiles. That is 16 multiplies
per 4 outputs instead of 36: 2.25x fewer flops than a direct 3x3 conv, paid for with the two
transforms, which are additions only (and halvings, exact in binary floating point, in G).

Work items (cpu_blas.run_items threads, BLAS single-threaded), each one Numba kernel:
- images with many tiles (32x32 px and up): a band of tile rows of one image. The band's input
  rows zero-padded into a per-thread buffer (never a padded copy of the whole image: 270 MB at
  the VAE's 512x512 layers), input transform into V, 16 sgemm calls, output transform (plus
  bias) straight into y; V and M stay in cache.
- small images (16x16: 64 tiles, 1280 channels): the whole batch's V is computed once, and an
  item is a block of output channels. Split by tiles, every item would stream all of U (16·O·C
  floats, 105 MB at 1280 channels) for a GEMM only 32 tiles wide.
U is computed per call (1280x1280: 8 ms), or inside a `kernels.weight_cache` block once per weight
array (weightcache.py: a sampling loop keeps it across its steps, at 1.8x the weights' memory as
float32, 3.6x for float16 weights). float16 weights are widened while U is computed.
Items depend on the shape only and each is computed the same way whichever thread runs it, so
results do not depend on the thread count.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from minriff.kernels.cpu import blas as cpu_blas
from minriff.kernels.cpu import weightcache
from minriff.kernels.cpu.blas import run_items, sgemm
from minriff.kernels.cpu.half import widen
from minriff.kernels.cpu.vecmath import FMA_FLAGS, prefer_wide_vectors
from minriff.kernels.cpu.workspace import buffer, pad_flat

TILES_PER_ITEM = 128  # GEMM width T; see tile_rows_per_item (F(4x4, 3x3): 64 was 1.1-1.15x slower at 64x64)
MIN_ITEMS = 4  # work items per conv at least (SD's 32x32 layers at batch 2: 4 items of 128 tiles)
SPLIT_TILES = 256  # tiles per image from which items are bands of tile rows (32x32 px and up)
CHANNEL_BLOCK = 128  # output channels per item below that


@njit(inline="always", error_model="numpy", fastmath=FMA_FLAGS)
def _gg(a, b, c):
    """One row or column of G g Gᵀ: G (a, b, c)ᵀ."""
    h = np.float32(0.5)
    return a, h * (a + b + c), h * (a - b + c), c


@njit(inline="always", error_model="numpy", fastmath=FMA_FLAGS)
def _transform_one(w, u, o, uo):
    """u[:, uo, :] = G w[o, c] Gᵀ for every input channel c (a loop over c: vectorises). w float32
    or float16 bits (widened as read, half.py)."""
    for c in range(w.shape[1]):
        t0 = _gg(widen(w[o, c, 0, 0]), widen(w[o, c, 1, 0]), widen(w[o, c, 2, 0]))  # G g, column by column
        t1 = _gg(widen(w[o, c, 0, 1]), widen(w[o, c, 1, 1]), widen(w[o, c, 2, 1]))
        t2 = _gg(widen(w[o, c, 0, 2]), widen(w[o, c, 1, 2]), widen(w[o, c, 2, 2]))
        for r in range(4):
            e = _gg(t0[r], t1[r], t2[r])  # row r of (G g) Gᵀ
            u[4 * r, uo, c] = e[0]
            u[4 * r + 1, uo, c] = e[1]
            u[4 * r + 2, uo, c] = e[2]
            u[4 * r + 3, uo, c] = e[3]


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def transform_weights(w, u):
    """w (O, C, 3, 3) float32 or float16 bits -> u (16, O, C) float32: u[4r + s, o, c] = (G w[o, c] Gᵀ)[r, s]."""
    prefer_wide_vectors()
    for o in prange(w.shape[0]):
        _transform_one(w, u, o, o)


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def _input_transform(xp, tr0, tr1, tw, cols, v):
    """xp (C, Hp, Wp) zero-padded input -> v (16, C, T): v[4r + s, c, t] = (Bᵀ d B)[r, s] for the
    patch d = xp[c, 2ti : 2ti + 4, 2tj : 2tj + 4] of tile t = (ti - tr0) * tw + tj. cols (4, Wp)
    scratch. Two passes per row of tiles, each a loop over contiguous memory: Bᵀ on the four input
    rows (all columns at once), then B along each of those rows (stride-2 reads)."""
    prefer_wide_vectors()
    C, _, Wp = xp.shape
    for c in range(C):
        for ti in range(tr0, tr1):
            r0, r1, r2, r3 = xp[c, 2 * ti], xp[c, 2 * ti + 1], xp[c, 2 * ti + 2], xp[c, 2 * ti + 3]
            a, b, cc, d = cols[0], cols[1], cols[2], cols[3]
            for k in range(Wp):  # rows of Bᵀ d
                a[k] = r0[k] - r2[k]
                b[k] = r1[k] + r2[k]
                cc[k] = r2[k] - r1[k]
                d[k] = r1[k] - r3[k]
            base = (ti - tr0) * tw
            for i in range(4):
                row = cols[i]
                v0, v1, v2, v3 = (v[4 * i, c, base:], v[4 * i + 1, c, base:],
                                  v[4 * i + 2, c, base:], v[4 * i + 3, c, base:])
                for tj in range(tw):  # (Bᵀ d) B along the row
                    k = 2 * tj
                    v0[tj] = row[k] - row[k + 2]
                    v1[tj] = row[k + 1] + row[k + 2]
                    v2[tj] = row[k + 2] - row[k + 1]
                    v3[tj] = row[k + 1] - row[k + 3]


@njit(cache=True, error_model="numpy", nogil=True)
def pad_band(x, p0, top, left, out):
    """out (C, Hb, Wp)[c, i, j] = x (C, H, W)[c, p0 + i - top, j - left], zeros outside x: rows
    p0 .. p0 + Hb of the zero-padded image, for one work item (whole padded images of a 512x512
    VAE layer would be another 270 MB)."""
    C, H, W = x.shape
    Hb = out.shape[1]
    for c in range(C):
        for i in range(Hb):
            h = p0 + i - top
            row = out[c, i]
            row[:] = 0
            if 0 <= h < H:
                row[left : left + W] = x[c, h]


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def _output_transform(m, tr0, tr1, tw, bias, has_bias, y):
    """m (16, O, T) -> y (O, Ho, Wo) for the tile rows tr0 .. tr1: the 2x2 block Aᵀ m A (+ bias)
    of each tile, clipped at the image's bottom and right edges (odd Ho, Wo)."""
    prefer_wide_vectors()
    O, Ho, Wo = y.shape
    for o in range(O):
        bo = bias[o] if has_bias else np.float32(0)
        for ti in range(tr0, tr1):
            base = (ti - tr0) * tw
            oh = 2 * ti
            for tj in range(tw):
                t = base + tj
                # rows first: p_s = (Aᵀ m)[0, s], q_s = (Aᵀ m)[1, s]
                p0 = m[0, o, t] + m[4, o, t] + m[8, o, t]
                p1 = m[1, o, t] + m[5, o, t] + m[9, o, t]
                p2 = m[2, o, t] + m[6, o, t] + m[10, o, t]
                p3 = m[3, o, t] + m[7, o, t] + m[11, o, t]
                q0 = m[4, o, t] - m[8, o, t] - m[12, o, t]
                q1 = m[5, o, t] - m[9, o, t] - m[13, o, t]
                q2 = m[6, o, t] - m[10, o, t] - m[14, o, t]
                q3 = m[7, o, t] - m[11, o, t] - m[15, o, t]
                ow = 2 * tj
                y00, y01 = p0 + p1 + p2 + bo, p1 - p2 - p3 + bo
                y10, y11 = q0 + q1 + q2 + bo, q1 - q2 - q3 + bo
                if ow + 1 < Wo:
                    y[o, oh, ow], y[o, oh, ow + 1] = y00, y01
                    if oh + 1 < Ho:
                        y[o, oh + 1, ow], y[o, oh + 1, ow + 1] = y10, y11
                else:
                    y[o, oh, ow] = y00
                    if oh + 1 < Ho:
                        y[o, oh + 1, ow] = y10


@njit(inline="always", error_model="numpy")
def position_gemms(fn, kind, u, o0, ob, v, ldv, m, ldm, T):
    """m[e, :ob, :T] = u[e, o0:o0+ob] (ob, C) @ v[e, :, :T] (C, T) for every position e of the
    transformed tile (16 for F(2x2, 3x3), 36 for F(4x4, 3x3)); v, m with row strides ldv, ldm."""
    C = u.shape[2]
    for e in range(u.shape[0]):
        sgemm(fn, kind, ob, T, C, u[e].ctypes.data + 4 * o0 * C, C, v[e].ctypes.data, ldv, np.float32(0),
              m[e].ctypes.data, ldm)


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def winograd_rows(fn, kind, xp, u, bias, has_bias, y, tr0, tr1, tw, v, m):
    """y[:, 2*tr0 : 2*tr1] of one image. xp (C, Hp, Wp) padded input, u (16, O, C) transformed
    weights; v (16, C, >= T), m (16, O, >= T) scratch for T = (tr1 - tr0) * tw tiles."""
    O = u.shape[1]
    T = (tr1 - tr0) * tw
    vt = v[:, :, :T]
    mt = m[:, :, :T]
    cols = np.empty((4, xp.shape[2]), np.float32)
    _input_transform(xp, tr0, tr1, tw, cols, vt)
    position_gemms(fn, kind, u, 0, O, v, v.shape[2], m, m.shape[2], T)
    _output_transform(mt, tr0, tr1, tw, bias, has_bias, y)


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, nogil=True)
def winograd_channels(fn, kind, v, u, o0, o1, bias, has_bias, y, th, tw, m):
    """y[:, o0:o1] of every image from the whole batch's transformed input v (16, C, N·th·tw):
    16 GEMMs (o1-o0, C) @ (C, N·th·tw) into m (16, >= o1-o0, >= N·th·tw), then the output
    transform image by image. For small images, where the tiles are few and the weights many."""
    ob = o1 - o0
    per_image = th * tw
    position_gemms(fn, kind, u, o0, ob, v, v.strides[1] // 4, m, m.strides[1] // 4, v.shape[2])
    for n in range(y.shape[0]):
        _output_transform(m[:, :ob, n * per_image : (n + 1) * per_image], 0, th, tw, bias[o0:o1] if has_bias else bias,
                          has_bias, y[n, o0:o1])


def tile_rows_per_item(th: int, tw: int, images: int) -> int:
    """Tile rows per work item: about TILES_PER_ITEM tiles (GEMM width; 64 and 256 were 5-20%
    slower here), halved until there are MIN_ITEMS items. A function of the shape only, never of
    the thread count: an item's GEMM width could change which sgemm kernel OpenBLAS picks, and
    with it the bits."""
    rows = max(1, TILES_PER_ITEM // tw)
    while rows > 1 and images * -(-th // rows) < MIN_ITEMS:
        rows //= 2
    return rows


def transformed(w) -> np.ndarray:
    """U (16, O, C) float32 of w (O, C, 3, 3) float32 or float16 bits."""
    u = weightcache.empty((16, w.shape[0], w.shape[1]))
    transform_weights(w, u)
    return u


def conv3x3(x, w, b, pads, y, u=None):
    """y (N, O, Ho, Wo) = conv of x (N, C, H, W) with w (O, C, 3, 3), float32 contiguous (w may be
    float16 bits, half.bits_or_float32), stride 1, pads (top, bottom, left, right). `u`: w already
    transformed (`transformed(w)`, e.g. kept by weightcache), else it is computed here. Work items:
    bands of tile rows when the images have many tiles (>= SPLIT_TILES per image), else blocks of
    CHANNEL_BLOCK output channels over the whole batch's tiles."""
    N, C, H, W = x.shape
    O = w.shape[0]
    top, bottom, left, right = pads
    Ho, Wo = H + top + bottom - 2, W + left + right - 2
    th, tw = -(-Ho // 2), -(-Wo // 2)
    Hp, Wp = 2 * th + 2, 2 * tw + 2  # whole tiles: the last row/column of patches may read zeros
    if u is None:
        u = transformed(w)
    has_bias = b is not None
    bias = b if has_bias else np.zeros(1, np.float32)
    threads = numba.get_num_threads()
    fn, kind = cpu_blas.SGEMM_ADDR, cpu_blas.SGEMM_KIND
    if th * tw < SPLIT_TILES:
        xp = buffer("padded", N * C * Hp * Wp).reshape(N, C, Hp * Wp)
        for n in range(N):
            pad_flat(x[n], top, left, Hp, Wp, xp[n])
        xp = xp.reshape(N, C, Hp, Wp)
        T = N * th * tw
        v = buffer("vall", 16 * C * T).reshape(16, C, T)
        cols = np.empty((4, Wp), np.float32)
        for n in range(N):
            _input_transform(xp[n], 0, th, tw, cols, v[:, :, n * th * tw : (n + 1) * th * tw])
        items = [(o0, min(o0 + CHANNEL_BLOCK, O)) for o0 in range(0, O, CHANNEL_BLOCK)]

        def by_channels(item):
            m = buffer("m", 16 * CHANNEL_BLOCK * T).reshape(16, CHANNEL_BLOCK, T)
            winograd_channels(fn, kind, v, u, item[0], item[1], bias, has_bias, y, th, tw, m)

        run_items(by_channels, items, threads)
        return
    run_row_bands(winograd_rows, 2, x, u, bias, has_bias, pads, th, tw, Wp, y)


def run_row_bands(rows_kernel, tile: int, x, u, bias, has_bias, pads, th, tw, Wp, y) -> None:
    """The band path of F(2x2, 3x3) (tile 2, `winograd_rows`) and F(4x4, 3x3) (tile 4,
    winograd4.winograd4_rows): work items of tile_rows_per_item rows of th x tw tiles of one
    image, each padding its own band of input rows into a per-thread buffer (the last 2 rows
    overlap the next band's) and calling rows_kernel(fn, kind, band, u, bias, has_bias, y rows,
    0, band tile rows, tw, v, m) with v (E, C, ld) and m (E, O, ld) per-thread scratch, E = u's
    positions. y (N, O, Ho, Wo)."""
    N, C = x.shape[:2]
    E, O = u.shape[:2]
    top, _, left, _ = pads
    Ho = y.shape[2]
    rows = tile_rows_per_item(th, tw, N)
    T = rows * tw
    ld = T + 16 if (4 * T) % 4096 == 0 else T  # rows 4 KiB apart would share L1 sets
    items = [(n, r0, min(r0 + rows, th)) for n in range(N) for r0 in range(0, th, rows)]
    fn, kind = cpu_blas.SGEMM_ADDR, cpu_blas.SGEMM_KIND

    def by_rows(item):
        n, r0, r1 = item
        Hb = tile * (r1 - r0) + 2
        band = buffer("band", C * Hb * Wp).reshape(C, Hb, Wp)
        pad_band(x[n], tile * r0, top, left, band)
        v = buffer("v", E * C * ld).reshape(E, C, ld)
        m = buffer("m", E * O * ld).reshape(E, O, ld)
        rows_kernel(fn, kind, band, u, bias, has_bias, y[n, :, tile * r0 : min(tile * r1, Ho)], 0, r1 - r0, tw, v, m)

    run_items(by_rows, items, numba.get_num_threads())
