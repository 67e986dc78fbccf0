"""conv2d on the CPU. Six paths, all ending in BLAS (choose_path picks one):

- 1x1, stride 1, no padding: GEMMs (O, C) @ (C, band of H*W) on the input itself, no copy; an
  input whose memory is channels-last (a UNet transformer's tokens (N, H*W, C) seen as an image for
  its proj_out) as (O, C) @ (band of pixels, C)ᵀ (conv1x1_channels_last), also without a copy.
- 3x3, stride 1, >= WINOGRAD_MIN_CHANNELS input channels, >= WINOGRAD4_MIN_PIXELS output pixels
  per image (32x32: SD's 32 and 64 px layers, the VAE's, TAESD's 64-channel ones): Winograd
  F(4x4, 3x3), winograd4.py, 4x fewer multiplies than direct, 1.78x fewer than F(2x2, 3x3).
  Measured against F(2x2, 3x3) (interleaved medians of 5, 2 threads, float32 weights, transformed
  per call): SD's 64 px (2,320)->320 1.38x, (2,640)->320 1.46x; 32 px (2,320)->320 1.26x,
  (2,640)->640 1.28x, (2,1280)->1280 1.32x; the VAE's (1,512,64,64) 1.50x, (1,512,128,128) 1.49x,
  (1,256,256,256) 1.59x, (1,128,512,512) 1.56x; 64 channels (TAESD) 1.12x at 64 px, 1.45x at
  256 px. At 16 px it lost ((2,1280)->1280 0.91x, (2,640)->640 0.94x): U = 36·O·C floats (4x the
  weights) is the big operand there, and the tiles are few. A whole UNet step (fp16 weights):
  1.06x. Inside kernels.weight_cache its U is kept too (2.25x the size of F(2x2, 3x3)'s).
- the same convs with 64 to 1023 output pixels per image (SD's 8 and 16 px layers): Winograd
  F(2x2, 3x3), winograd.py, 2.25x fewer multiplies. Measured against the paths it replaced (2
  threads): 1.4-1.7x the taps path at 32 and 64 px, 1.3-1.5x the batch path at 16 px; at 64
  channels (TAESD, 64-512 px, one thread, CPU time) 1.1-1.35x the taps path. At 8x8 (1280 and
  2560 -> 1280 channels, batch 2) it ties with the batch path when it transforms the weights per
  call, and takes 0.62-0.64x its time when a sampling loop keeps them transformed
  (kernels.weight_cache).
- small images (at most BATCH_COLUMNS output pixels in the whole batch: 8x8 layers with few
  channels): im2col of the whole batch and one GEMM (O, 9C) @ (9C, N*Ho*Wo).
  The weights are the big operand there (118 MB for 2560 -> 1280 channels); per-tap GEMMs on
  80-pixel-wide images re-pack them nine times per image. Measured: 8x8 layers 67-73 -> 198-216
  GFLOP/s, 16x16 161-167 -> 245-273 (2 threads; 32x32 stays faster with taps, 252 vs 227).
- other stride-1 convs with >= TAPS_MIN_CHANNELS input channels: no im2col. The input
  is zero-padded once into (C, Hp*Wp + slack); in that flat layout the window tap (i, j) of every
  output pixel is the same matrix shifted by i*Wp + j, so the conv is kh*kw accumulating GEMMs
  (O, C) @ (C, Ho*Wp) on strided views (cpu_blas.gemm_into, beta = 1) into a "wide" output
  whose last Wp - Wo columns per row are junk and are cropped (with the bias added) at the end.
  This skips writing the 9x larger column matrix (47 MB per SD image).
- everything else (strided, few channels): im2col (Numba, parallel over rows of the column
  matrix) and one GEMM per chunk of output rows; the column buffer is capped, so a 512x512 VAE
  layer is done in row chunks instead of a multi-GB matrix.
Every GEMM runs on the run_items threads with BLAS on one thread (never numpy's threaded matmul,
see weightgemm.a_b). Buffers come from a per-thread workspace reused across calls (cpu_workspace.buffer). Taps are
accumulated in a fixed order: same bits for any thread count."""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from minriff.kernels.cpu import weightcache, weightgemm
from minriff.kernels.cpu import winograd as cpu_winograd
from minriff.kernels.cpu import winograd4 as cpu_winograd4
from minriff.kernels.cpu.blas import gemm_into, run_items
from minriff.kernels.cpu.elementwise import add_bias_channels
from minriff.kernels.cpu.half import as_float32
from minriff.kernels.cpu.vecmath import FMA_FLAGS
from minriff.kernels.cpu.workspace import buffer, pad_flat

COLS_LIMIT_BYTES = 64 << 20
BAND_COLUMNS = 2048  # output pixels (padded width) per GEMM work item
TAPS_MIN_CHANNELS = 64  # below this a K = C GEMM per tap is too thin; im2col's K = 9C wins
BATCH_COLUMNS = 512  # at most this many output pixels in the whole batch: one im2col GEMM
WINOGRAD_MIN_CHANNELS = 64  # input channels; and >= 4 output channels (VAE's 128 -> 3 is faster by taps)
WINOGRAD_MIN_PIXELS = 64  # output pixels per image (8x8); below, the batch path
WINOGRAD4_MIN_PIXELS = 1024  # output pixels per image (32x32) for F(4x4, 3x3); at 16x16 F(2x2, 3x3) was faster
PATHS = ("1x1", "batch", "winograd4", "winograd", "taps", "im2col")
FORCE_PATH = None  # tests: one of PATHS to run every conv it applies to through that path


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
def crop_wide(wide, Wp, Wo, b, has_bias, y):
    """wide (O, Ho*Wp) -> y (O, Ho*Wo): drop the junk columns, add the bias."""
    O = y.shape[0]
    Ho = y.shape[1] // Wo
    for o in prange(O):
        bo = b[o] if has_bias else np.float32(0)
        for oh in range(Ho):
            for ow in range(Wo):
                y[o, oh * Wo + ow] = wide[o, oh * Wp + ow] + bo


def _conv_taps(x, w, b, pads, y):
    """Stride-1 conv as kh*kw accumulating GEMMs on shifted views of the padded input.
    Work items are (image, band of output rows), run on BLAS-single-threaded Python threads."""
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    top, bottom, left, right = pads
    Hp, Wp = H + top + bottom, W + left + right
    Ho, Wo = Hp - kh + 1, Wp - kw + 1
    S = Hp * Wp + kw - 1  # the last tap's view reads kw - 1 past the padded image
    taps = np.ascontiguousarray(w.transpose(2, 3, 0, 1))  # (kh, kw, O, C)
    xp = buffer("padded", N * C * S).reshape(N, C, S)
    wide = buffer("wide", N * O * Ho * Wp).reshape(N, O, Ho * Wp)
    for n in range(N):
        pad_flat(x[n], top, left, Hp, Wp, xp[n])
    band = max(1, -(-BAND_COLUMNS // Wp))  # output rows per item: a fixed function of the shape
    items = [(n, r0, min(r0 + band, Ho)) for n in range(N) for r0 in range(0, Ho, band)]

    def work(item):
        n, r0, r1 = item
        cols = slice(r0 * Wp, r1 * Wp)
        for i in range(kh):
            for j in range(kw):
                off = i * Wp + j
                gemm_into(taps[i, j], xp[n, :, off + cols.start : off + cols.stop], wide[n, :, cols],
                          beta=0.0 if i == j == 0 else 1.0)

    run_items(work, items, numba.get_num_threads())
    has_bias = b is not None
    bias = b if has_bias else np.zeros(1, np.float32)
    for n in range(N):
        crop_wide(wide[n], Wp, Wo, bias, has_bias, y[n])


@njit(cache=True, error_model="numpy", fastmath=FMA_FLAGS, parallel=True)
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


def conv1x1_channels_last(xl, w2, b):
    """xl (N, H, W, C) C-contiguous (an image stored channels-last: a UNet transformer's tokens),
    w2 (O, C) float32 -> (N, O, H, W): GEMMs (O, C) @ (band of pixels, C)ᵀ, reading the pixels
    transposed where they are instead of first copying them to (N, C, H, W)."""
    N, H, W, C = xl.shape
    O = w2.shape[0]
    x3 = xl.reshape(N, H * W, C)
    y = np.empty((N, O, H * W), np.float32)

    def work(item):  # the band's bias first, then accumulated into (while the band is in cache)
        n, c0, c1 = item
        if b is not None:
            y[n, :, c0:c1] = b[:, None]
        gemm_into(w2, x3[n, c0:c1], y[n, :, c0:c1], beta=0.0 if b is None else 1.0, trans_b=True)

    run_items(work, [(n, c0, min(c0 + BAND_COLUMNS, H * W)) for n in range(N) for c0 in range(0, H * W, BAND_COLUMNS)],
              numba.get_num_threads())
    return y.reshape(N, O, H, W)


def choose_path(xshape, wshape, stride, pads) -> str:
    """Which of PATHS conv2d takes (see the module docstring); FORCE_PATH wins where it applies."""
    N, C, H, W = xshape
    O, _, kh, kw = wshape
    top, bottom, left, right = pads
    Ho = (H + top + bottom - kh) // stride + 1
    Wo = (W + left + right - kw) // stride + 1
    fits = {
        "1x1": kh == kw == 1 and stride == 1 and pads == (0, 0, 0, 0),
        "batch": 4 * C * kh * kw * N * Ho * Wo <= COLS_LIMIT_BYTES,
        "winograd4": kh == kw == 3 and stride == 1,
        "winograd": kh == kw == 3 and stride == 1,
        "taps": stride == 1,
        "im2col": True,
    }
    if FORCE_PATH is not None and fits[FORCE_PATH]:
        return FORCE_PATH
    if fits["1x1"]:
        return "1x1"
    if fits["winograd"] and C >= WINOGRAD_MIN_CHANNELS and O >= 4 and Ho * Wo >= WINOGRAD_MIN_PIXELS:
        return "winograd4" if Ho * Wo >= WINOGRAD4_MIN_PIXELS else "winograd"
    if fits["batch"] and N * Ho * Wo <= BATCH_COLUMNS:
        return "batch"
    if fits["taps"] and C >= TAPS_MIN_CHANNELS:
        return "taps"
    return "im2col"


def conv2d(x, w, b, stride, pads, key=None):
    """x (N, C, H, W) float32 contiguous, w (O, C, kh, kw) float32 or float16 bits
    (half.bits_or_float32), pads (top, bottom, left, right). `key`: the weight array the caller
    holds (w may be a view made per call), under which weightcache keeps derived forms."""
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    top, bottom, left, right = pads
    Ho = (H + top + bottom - kh) // stride + 1
    Wo = (W + left + right - kw) // stride + 1
    y = np.empty((N, O, Ho * Wo), np.float32)
    path = choose_path(x.shape, w.shape, stride, pads)
    # float16 weights: Winograd widens them as it transforms them, the batch path per block of
    # rows; the others widen the whole weight first
    w2 = None if path in ("winograd4", "winograd", "batch") else as_float32(w, "weight").reshape(O, C * kh * kw)
    if path == "1x1":
        x3 = x.reshape(N, C, H * W)
        items = [(n, c0, min(c0 + BAND_COLUMNS, H * W)) for n in range(N) for c0 in range(0, H * W, BAND_COLUMNS)]

        def work(item):  # (O, C) @ (C, band of pixels)
            n, c0, c1 = item
            gemm_into(w2, x3[n, :, c0:c1], y[n, :, c0:c1], beta=0.0)

        run_items(work, items, numba.get_num_threads())
    elif path == "batch":
        K, P = C * kh * kw, Ho * Wo
        cols = buffer("cols", K * N * P).reshape(K, N * P)
        for n in range(N):
            im2col(x[n], kh, kw, stride, top, left, 0, Wo, cols[:, n * P : (n + 1) * P])
        y2 = buffer("wide", O * N * P).reshape(O, N * P)
        # one GEMM for the whole batch, K = 9C deep; with many output channels in blocks of rows
        # on single-threaded BLAS (weightgemm; 8x8 layers, (1280, 11520) @ (11520, 128): 247 against
        # 192 GFLOP/s for OpenBLAS's own split). Blocks fixed by the shape: same bits for any thread count.
        kept = key is not None and weightcache.active() and w.dtype == np.uint16
        w_ok = weightcache.float32_of(w.view(np.float16), key) if kept else w  # (kept: widened once per loop)
        weightgemm.w_x(w_ok.reshape(O, K), cols, y2)
        y[:] = y2.reshape(O, N, P).transpose(1, 0, 2)
    elif path == "winograd4":
        u = weightcache.derived(key, "winograd4", lambda: cpu_winograd4.transformed(w)) if key is not None else None
        cpu_winograd4.conv3x3(x, w, b, pads, y.reshape(N, O, Ho, Wo), u)
        return y.reshape(N, O, Ho, Wo)
    elif path == "winograd":
        u = weightcache.derived(key, "winograd", lambda: cpu_winograd.transformed(w)) if key is not None else None
        cpu_winograd.conv3x3(x, w, b, pads, y.reshape(N, O, Ho, Wo), u)
        return y.reshape(N, O, Ho, Wo)
    elif path == "taps":
        _conv_taps(x, w2.reshape(w.shape), b, pads, y)
        return y.reshape(N, O, Ho, Wo)
    else:
        K = C * kh * kw
        rows_per_chunk = max(1, min(Ho, COLS_LIMIT_BYTES // (4 * K * Wo)))
        for n in range(N):
            for oh0 in range(0, Ho, rows_per_chunk):
                rows = min(rows_per_chunk, Ho - oh0)
                cols = buffer("cols", K * rows * Wo).reshape(K, rows * Wo)
                im2col(x[n], kh, kw, stride, top, left, oh0, Wo, cols)
                weightgemm.a_b(w2, cols, y[n, :, oh0 * Wo : (oh0 + rows) * Wo])
    if b is not None:
        add_bias_channels(y, b)
    return y.reshape(N, O, Ho, Wo)
