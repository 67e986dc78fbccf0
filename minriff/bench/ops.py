"""`minriff bench ops`: each kernel op at Stable Diffusion v1.5 shapes (batch 2, 64x64 latents).

For each op: median time, throughput (GFLOP/s for matrix-product ops, GB/s of input+output for
memory-bound ops), the fraction of the same-run numpy sgemm GFLOP/s, and, when torch is
installed, torch's time for the same op with the same thread count and torch_time / minriff_time
(> 1: minriff faster)."""
from __future__ import annotations

import numba
import numpy as np

from .common import emit, sgemm_gflops, timeit, torch_or_none


def _cases(quick: bool):
    """(name, minriff call F -> result, torch call (torch, tF) -> result, flops, bytes, arrays)."""
    s = 2 if quick else 1  # --quick: halve spatial and sequence sizes
    T = 4096 // (s * s)
    hw = 64 // s
    rng = np.random.default_rng(0)

    def r(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    x320, w3, w1, b320 = r(2, 320, hw, hw), r(320, 320, 3, 3) * 0.02, r(320, 320, 1, 1) * 0.05, r(320)
    xl, wl, bl = r(2 * T, 320), r(1280, 320) * 0.05, r(1280)
    xg, gw, gb = r(2, 640, 32 // s, 32 // s), r(640), r(640)
    xs, lw, lb = r(2, T, 320), r(320), r(320)
    q, k, v = r(2, 8, T, 40), r(2, 8, T, 40), r(2, 8, T, 40)
    kc, vc = r(2, 8, 77, 40), r(2, 8, 77, 40)
    sm, xgg, xu = r(16, 1024 // s, T), r(2, T, 2560), r(2, 320, hw // 2, hw // 2)
    B4 = 4  # bytes per float32
    cases = [
        ("conv3x3 (2,320,64,64)->320", lambda F: F.conv2d(x320, w3, b320, 1, 1),
         lambda t, a: t.nn.functional.conv2d(a[0], a[1], a[2], 1, 1), 2 * 2 * 320 * hw * hw * 320 * 9, None, (x320, w3, b320)),
        ("conv1x1 (2,320,64,64)->320", lambda F: F.conv2d(x320, w1, b320),
         lambda t, a: t.nn.functional.conv2d(a[0], a[1], a[2]), 2 * 2 * 320 * hw * hw * 320, None, (x320, w1, b320)),
        ("linear (8192,320)->1280", lambda F: F.linear(xl, wl, bl),
         lambda t, a: t.nn.functional.linear(*a), 2 * 2 * T * 320 * 1280, None, (xl, wl, bl)),
        ("group_norm+silu (2,640,32,32) g32", lambda F: F.group_norm(xg, 32, gw, gb, 1e-5, silu=True),
         lambda t, a: t.nn.functional.silu(t.nn.functional.group_norm(a[0], 32, a[1], a[2], 1e-5)), None, 2 * xg.nbytes, (xg, gw, gb)),
        ("group_norm (2,640,32,32) g32", lambda F: F.group_norm(xg, 32, gw, gb, 1e-5),
         lambda t, a: t.nn.functional.group_norm(a[0], 32, a[1], a[2], 1e-5), None, 2 * xg.nbytes, (xg, gw, gb)),
        ("layer_norm (2,4096,320)", lambda F: F.layer_norm(xs, lw, lb, 1e-5),
         lambda t, a: t.nn.functional.layer_norm(a[0], (320,), a[1], a[2], 1e-5), None, 2 * xs.nbytes, (xs, lw, lb)),
        ("attention self B2 H8 T4096 D40", lambda F: F.attention(q, k, v),
         lambda t, a: t.nn.functional.scaled_dot_product_attention(*a), 4 * 16 * T * T * 40, None, (q, k, v)),
        ("attention cross T4096 -> 77", lambda F: F.attention(q, kc, vc),
         lambda t, a: t.nn.functional.scaled_dot_product_attention(*a), 4 * 16 * T * 77 * 40, None, (q, kc, vc)),
        ("softmax (16,1024,4096)", lambda F: F.softmax(sm),
         lambda t, a: t.softmax(a[0], -1), None, 2 * sm.nbytes, (sm,)),
        ("geglu (2,4096,2560)", lambda F: F.geglu(xgg),
         lambda t, a: (lambda h: h[0] * t.nn.functional.gelu(h[1]))(a[0].chunk(2, -1)), None, xgg.nbytes * 3 // 2, (xgg,)),
        ("silu (2,320,64,64)", lambda F: F.silu(x320),
         lambda t, a: t.nn.functional.silu(a[0]), None, 2 * x320.nbytes, (x320,)),
        ("upsample2x (2,320,32,32)", lambda F: F.upsample_nearest2x(xu),
         lambda t, a: t.nn.functional.interpolate(a[0], scale_factor=2, mode="nearest"), None, 5 * xu.nbytes, (xu,)),
    ]
    del B4
    return cases


def run(args) -> int:
    if getattr(args, "backend", "cpu") == "cuda":
        from .ops_cuda import run as run_cuda

        return run_cuda(args)
    from minriff import kernels

    F = kernels.ops(args.backend or "cpu")
    quick = bool(getattr(args, "quick", False))
    repeat = args.repeat or (2 if quick else 5)
    threads = numba.get_num_threads()
    torch = torch_or_none()
    if torch is not None:
        torch.set_num_threads(threads)
    peak = sgemm_gflops(512 if quick else 1024, repeat=repeat)
    rows = []
    for name, ours, theirs, flops, nbytes, arrays in _cases(quick):
        t = timeit(lambda: ours(F), repeat=repeat)
        row = {"op": name, "ms": t * 1e3,
               "GFLOP/s": flops / t / 1e9 if flops else None,
               "GB/s": nbytes / t / 1e9 if nbytes else None,
               "of_sgemm": flops / t / 1e9 / peak if flops else None,
               "torch_ms": None, "torch/minriff": None}
        if torch is not None:
            targs = [torch.from_numpy(a) for a in arrays]
            with torch.inference_mode():
                tt = timeit(lambda: theirs(torch, targs), repeat=repeat)
            row["torch_ms"], row["torch/minriff"] = tt * 1e3, tt / t
        rows.append(row)
    extra = {"backend": F.name, "threads": threads, "sgemm_GFLOP/s": round(peak, 1),
             "torch": torch.__version__ if torch is not None else "not installed"}
    emit(rows, args.json, "minriff bench ops (medians; torch/minriff > 1 means minriff is faster)", extra)
    return 0
