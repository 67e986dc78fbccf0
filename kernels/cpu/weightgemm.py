"""GEMMs whose big operand is a layer's weight: linear layers on few rows (the UNet's 16x16 and
8x8 levels, the text encoder) and the batched im2col convs of 8x8 images. There the weight is
read once per call and is several times larger than the activations.

Work items are blocks of rows of the weight (output features or channels), on the run_items
threads with single-threaded BLAS. The blocks depend on the shape only (thread-count independent
bits): as few as hold at most MAX_BLOCK_ROWS rows each, their count rounded up to a multiple of
BLOCK_COUNT_MULTIPLE so 1, 2 or 4 threads get equal shares (1280 features were 5 blocks of 256:
one thread did 3 while the other waited; now 4 of 320); a float16 weight block is widened
by the thread that uses it (half.as_float32 into its own workspace buffer), so widening runs on
every core and right before its GEMM reads it. Measured on the shared 2-core machine against
numpy's threaded `x @ w.T` for float32 weights: (128, 1280) @ 1280² 0.2-0.25x the time,
(512, 1280) -> 1280 0.44-0.84x, (512, 5120) -> 1280 0.42-0.46x; float16 weights cost 0-15% more
than float32 through the same blocks. Re-measured with the balanced blocks and the bias folded
into each block's GEMM (beta = 1 on rows preset to the bias, instead of a separate pass), on
(R, K) -> O in GFLOP/s, float16 weights, against torch's threaded linear (~295-300 there):
(512, 1280) -> 1280 212 -> 255-270, (512, 5120) -> 1280 222 -> 262-271, (128, 1280) -> 1280
121-128 -> 176-182, (154, 768) -> 768 43-88 -> 145-166."""
from __future__ import annotations

import numba

from minriff.kernels.cpu.blas import gemm_into, run_items
from minriff.kernels.cpu.half import as_float32

MAX_BLOCK_ROWS = 1024  # weight rows per work item at most
BLOCK_COUNT_MULTIPLE = 4  # work items per call: a multiple of this (or fewer, if rows are few)


def blocks(rows: int) -> list[tuple[int, int]]:
    """[(r0, r1)]: the weight's rows in equal blocks of a multiple of 16 rows."""
    count = -(-rows // MAX_BLOCK_ROWS)
    count = -(-count // BLOCK_COUNT_MULTIPLE) * BLOCK_COUNT_MULTIPLE
    per_block = -(-rows // count)
    size = -(-per_block // 16) * 16
    return [(r0, min(r0 + size, rows)) for r0 in range(0, rows, size)]


def x_wt(x, w, y, bias=None) -> None:
    """y (R, O) = x (R, K) @ w (O, K)ᵀ (+ bias (O,)), in blocks of output features. w float32 or
    float16 bits (half.bits_or_float32); y may be a strided view (rows of any stride)."""
    def item(block):
        o0, o1 = block
        if bias is not None:
            y[:, o0:o1] = bias[o0:o1]
        gemm_into(x, as_float32(w[o0:o1], "weight_block"), y[:, o0:o1], beta=0.0 if bias is None else 1.0,
                  trans_b=True)

    run_items(item, blocks(w.shape[0]), numba.get_num_threads())


def w_x(w, x, y) -> None:
    """y (O, N) = w (O, K) @ x (K, N), in blocks of output rows. w float32 or float16 bits."""
    def item(block):
        o0, o1 = block
        gemm_into(as_float32(w[o0:o1], "weight_block"), x, y[o0:o1], beta=0.0)

    run_items(item, blocks(w.shape[0]), numba.get_num_threads())


def a_b(a, b, c) -> None:
    """c (M, N) = a (M, K) @ b (K, N), all float32, on the run_items threads: in blocks of a's rows
    (w_x) when a has at least 64, else of b's columns. numpy's own `a @ b` would wake OpenBLAS's
    thread pool, whose worker then spins for OPENBLAS_THREAD_TIMEOUT beside the next op's threads:
    in a UNet step a GEMM right after such a call ran at 0.7x its speed (GEGLU's projection
    69-72 ms against 48-49 ms with the pool's spinning cut short)."""
    if a.shape[0] >= 64:
        w_x(a, b, c)
        return

    def item(block):
        n0, n1 = block
        gemm_into(a, b[:, n0:n1], c[:, n0:n1], beta=0.0)

    run_items(item, blocks(b.shape[1]), numba.get_num_threads())

