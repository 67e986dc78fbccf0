"""GEMMs whose big operand is a layer's weight: linear layers on few rows (the UNet's 16x16 and
8x8 levels, the text encoder) and the batched im2col convs of 8x8 images. There the weight is
read once per call and is several times larger than the activations.

Work items are blocks of BLOCK_ROWS rows of the weight (output features or channels), fixed by
the shape, on the run_items threads with single-threaded BLAS; a float16 weight block is widened
by the thread that uses it (half.as_float32 into its own workspace buffer), so widening runs on
every core and right before its GEMM reads it. Measured on the shared 2-core machine against
numpy's threaded `x @ w.T` for float32 weights: (128, 1280) @ 1280² 0.2-0.25x the time,
(512, 1280) -> 1280 0.44-0.84x, (512, 5120) -> 1280 0.42-0.46x; float16 weights cost 0-15% more
than float32 through the same blocks."""
from __future__ import annotations

import numba

from minriff.kernels.cpu.blas import gemm_into, run_items
from minriff.kernels.cpu.half import as_float32

BLOCK_ROWS = 256  # weight rows per work item (a multiple of 16)


def _blocks(rows: int) -> list[tuple[int, int]]:
    return [(r0, min(r0 + BLOCK_ROWS, rows)) for r0 in range(0, rows, BLOCK_ROWS)]


def x_wt(x, w, y) -> None:
    """y (R, O) = x (R, K) @ w (O, K)ᵀ, in blocks of output features. w float32 or float16 bits
    (half.bits_or_float32); y may be a strided view (rows of any stride)."""
    def item(block):
        o0, o1 = block
        gemm_into(x, as_float32(w[o0:o1], "weight_block"), y[:, o0:o1], beta=0.0, trans_b=True)

    run_items(item, _blocks(w.shape[0]), numba.get_num_threads())


def w_x(w, x, y) -> None:
    """y (O, N) = w (O, K) @ x (K, N), in blocks of output rows. w float32 or float16 bits."""
    def item(block):
        o0, o1 = block
        gemm_into(as_float32(w[o0:o1], "weight_block"), x, y[o0:o1], beta=0.0)

    run_items(item, _blocks(w.shape[0]), numba.get_num_threads())
