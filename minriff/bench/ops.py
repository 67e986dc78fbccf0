"""`minriff bench ops`: each kernel op at Stable Diffusion v1.5 shapes (batch 2, 64x64 latents).

For each op: median time, throughput (GFLOP/s for matrix-product ops, GB/s of input+output for
memory-bound ops), the fraction of the same-run numpy sgemm GFLOP/s, and, when torch is
installed, torch's time for the same op with the same thread count and torch_time / minriff_time
(> 1: minriff faster); torch runs in a child process (bench/common.py ChildTimer says why). The
machine may be shared: each op, the sgemm baseline and torch run in interleaved rounds; the ms
column is the median, while throughputs and ratios use each one's best round (the least-disturbed
run, the usual estimator of intrinsic speed under noise).

conv3x3's GFLOP/s counts a direct convolution's flops (2·9·C·O per output pixel), the usual
convention: the Winograd paths do 4x (F(4x4, 3x3): the 64 and 32 px rows) or 2.25x (F(2x2, 3x3):
the 16 px row) fewer multiplies, so their "effective" rate can exceed sgemm's."""
from __future__ import annotations

import statistics
import time

import numba
import numpy as np

from minriff.bench.common import ChildTimer, emit, sgemm_gflops, torch_or_none, warm_time


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
    w3b = r(640, 640, 3, 3) * 0.015
    xh, w3h, bh = r(2, 1280, 16 // s, 16 // s), r(1280, 1280, 3, 3) * 0.01, r(1280)
    xs, lw, lb = r(2, T, 320), r(320), r(320)
    q, k, v = r(2, 8, T, 40), r(2, 8, T, 40), r(2, 8, T, 40)
    kc, vc = r(2, 8, 77, 40), r(2, 8, 77, 40)
    sm, xgg, xu = r(16, 1024 // s, T), r(2, T, 2560), r(2, 320, hw // 2, hw // 2)
    cases = [
        (f"conv3x3 (2,320,{hw},{hw})->320", lambda F: F.conv2d(x320, w3, b320, 1, 1),
         lambda t, a: t.nn.functional.conv2d(a[0], a[1], a[2], 1, 1), 2 * 2 * 320 * hw * hw * 320 * 9, None,
         (x320, w3, b320)),
        (f"conv3x3 (2,640,{hw // 2},{hw // 2})->640", lambda F: F.conv2d(xg, w3b, gb, 1, 1),
         lambda t, a: t.nn.functional.conv2d(a[0], a[1], a[2], 1, 1), 2 * 2 * 640 * hw * hw // 4 * 640 * 9, None,
         (xg, w3b, gb)),
        (f"conv3x3 (2,1280,{hw // 4},{hw // 4})->1280", lambda F: F.conv2d(xh, w3h, bh, 1, 1),
         lambda t, a: t.nn.functional.conv2d(a[0], a[1], a[2], 1, 1), 2 * 2 * 1280 * hw * hw // 16 * 1280 * 9, None,
         (xh, w3h, bh)),
        (f"conv1x1 (2,320,{hw},{hw})->320", lambda F: F.conv2d(x320, w1, b320),
         lambda t, a: t.nn.functional.conv2d(a[0], a[1], a[2]), 2 * 2 * 320 * hw * hw * 320, None, (x320, w1, b320)),
        (f"linear ({2 * T},320)->1280", lambda F: F.linear(xl, wl, bl),
         lambda t, a: t.nn.functional.linear(*a), 2 * 2 * T * 320 * 1280, None, (xl, wl, bl)),
        (f"group_norm+silu (2,640,{hw // 2},{hw // 2}) g32", lambda F: F.group_norm(xg, 32, gw, gb, 1e-5, silu=True),
         lambda t, a: t.nn.functional.silu(t.nn.functional.group_norm(a[0], 32, a[1], a[2], 1e-5)), None, 2 * xg.nbytes,
         (xg, gw, gb)),
        (f"group_norm (2,640,{hw // 2},{hw // 2}) g32", lambda F: F.group_norm(xg, 32, gw, gb, 1e-5),
         lambda t, a: t.nn.functional.group_norm(a[0], 32, a[1], a[2], 1e-5), None, 2 * xg.nbytes, (xg, gw, gb)),
        (f"layer_norm (2,{T},320)", lambda F: F.layer_norm(xs, lw, lb, 1e-5),
         lambda t, a: t.nn.functional.layer_norm(a[0], (320,), a[1], a[2], 1e-5), None, 2 * xs.nbytes, (xs, lw, lb)),
        (f"attention self B2 H8 T{T} D40", lambda F: F.attention(q, k, v),
         lambda t, a: t.nn.functional.scaled_dot_product_attention(*a), 4 * 16 * T * T * 40, None, (q, k, v)),
        (f"attention cross T{T} -> 77", lambda F: F.attention(q, kc, vc),
         lambda t, a: t.nn.functional.scaled_dot_product_attention(*a), 4 * 16 * T * 77 * 40, None, (q, kc, vc)),
        (f"softmax (16,{1024 // s},{T})", lambda F: F.softmax(sm),
         lambda t, a: t.softmax(a[0], -1), None, 2 * sm.nbytes, (sm,)),
        (f"geglu (2,{T},2560)", lambda F: F.geglu(xgg),
         lambda t, a: (lambda h: h[0] * t.nn.functional.gelu(h[1]))(a[0].chunk(2, -1)), None, xgg.nbytes * 3 // 2,
         (xgg,)),
        (f"silu (2,320,{hw},{hw})", lambda F: F.silu(x320),
         lambda t, a: t.nn.functional.silu(a[0]), None, 2 * x320.nbytes, (x320,)),
        (f"upsample2x (2,320,{hw // 2},{hw // 2})", lambda F: F.upsample_nearest2x(xu),
         lambda t, a: t.nn.functional.interpolate(a[0], scale_factor=2, mode="nearest"), None, 5 * xu.nbytes, (xu,)),
    ]
    return cases


def _torch_cases(quick: bool, threads: int | None = None) -> dict:
    """In the ChildTimer process: {case index: torch call}, on the same arrays as _cases builds."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    fns = {}
    for i, (_, _, theirs, _, _, arrays) in enumerate(_cases(quick)):
        targs = [torch.from_numpy(x) for x in arrays]

        def call(theirs=theirs, targs=targs):
            with torch.inference_mode():
                theirs(torch, targs)

        fns[i] = call
    return fns


# Before each timed call: a pause, then one untimed call (common.warm_time). BLAS and OpenMP
# worker threads keep spinning for up to ~0.1 s after a call returns (OpenBLAS's default thread
# timeout is 2^28 cycles) and would steal the cores from whatever runs next, here or in the
# torch child; and pools that did go to sleep take milliseconds to wake, which the untimed call
# absorbs. So every op is timed warm, as it runs inside a model step, and undisturbed by the
# previous one.
SETTLE_S = 0.15


def _rounds(timers: dict, repeat: int) -> dict:
    """Call the timers (each returns one measured time in seconds) in interleaved rounds, so a
    burst of load from other processes hits all of them alike."""
    times = {k: [] for k in timers}
    for _ in range(repeat):
        for k, timer in timers.items():
            time.sleep(SETTLE_S)
            times[k].append(timer())
    return times


def _median(xs):
    return statistics.median(xs) if xs else None


def run(args) -> int:
    if getattr(args, "backend", "cpu") == "cuda":
        from minriff.bench.ops_cuda import run as run_cuda

        return run_cuda(args)
    from minriff import kernels

    F = kernels.ops(args.backend or "cpu")
    quick = bool(getattr(args, "quick", False))
    repeat = args.repeat or (3 if quick else 7)
    threads = numba.get_num_threads()
    torch = torch_or_none()
    child = ChildTimer(_torch_cases, (quick,), threads) if torch is not None else None
    n = 512 if quick else 1024
    a = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    sgemm_flops = 2 * n**3
    peaks, rows = [], []
    try:
        for i, (name, ours, _, flops, nbytes, _) in enumerate(_cases(quick)):
            timers = {"minriff": lambda ours=ours: warm_time(lambda: ours(F))}
            if flops:
                timers["sgemm"] = lambda: warm_time(lambda: a @ a)
            if child is not None:
                timers["torch"] = lambda i=i: child.time(i)
            times = _rounds(timers, repeat)
            t, best = _median(times["minriff"]), min(times["minriff"])
            row = {"op": name, "ms": t * 1e3, "best_ms": best * 1e3,
                   "GFLOP/s": flops / best / 1e9 if flops else None,
                   "GB/s": nbytes / best / 1e9 if nbytes else None,
                   "of_sgemm": None, "torch_ms": None, "torch/minriff": None}
            if flops:  # best-of-rounds rate of this op over the best sgemm rate measured next to it
                peaks.append(sgemm_flops / min(times["sgemm"]) / 1e9)
                row["of_sgemm"] = (flops / best) / (sgemm_flops / min(times["sgemm"]))
            if "torch" in times:
                row["torch_ms"] = _median(times["torch"]) * 1e3
                row["torch/minriff"] = min(times["torch"]) / best
            rows.append(row)
    finally:
        if child is not None:
            child.close()
    extra = {"backend": F.name, "threads": threads, "repeat": repeat,
             f"sgemm_GFLOP/s (best of rounds, median over ops, n={n})": round(_median(peaks) or sgemm_gflops(n), 1),
             "torch": (f"{torch.__version__}, timed in a child process (see bench/common.py ChildTimer)"
                       if torch is not None else "not installed")}
    emit(rows, args.json, "minriff bench ops: ms = median, rates and ratios from the best of the interleaved rounds "
         "(torch/minriff > 1: minriff faster)", extra)
    return 0
