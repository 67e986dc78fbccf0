"""`minriff bench ops --backend cuda`: each cuda-backend op at Stable Diffusion v1.5 shapes
(batch 2, 64x64 latents), timed on the GPU with CUDA events (cupy.cuda.Event), with the same-run
cuBLAS sgemm GFLOP/s as the yardstick for the matrix-product ops.

Without a GPU there is nothing to time: the emulator runs the same kernels on the CPU, orders of
magnitude slower and with nothing in common with GPU timing. It is timed at tiny shapes only, so
that the bench itself is exercised, and labelled as such."""
from __future__ import annotations

import math

import numpy as np

from minriff.bench.common import emit, timeit


def _cases(F, quick: bool, tiny: bool):
    """(name, call, flops or None, bytes moved or None) on device arrays."""
    s = 8 if tiny else (2 if quick else 1)
    T, hw = 4096 // (s * s), 64 // s
    rng = np.random.default_rng(0)

    def r(*shape, scale=1.0):
        return F.asarray((rng.standard_normal(shape) * scale).astype(np.float32))

    x320, w3, w1, b320 = r(2, 320, hw, hw), r(320, 320, 3, 3, scale=0.02), r(320, 320, 1, 1, scale=0.05), r(320)
    xl, wl, bl = r(2 * T, 320), r(1280, 320, scale=0.05), r(1280)
    xg, gw, gb = r(2, 640, max(1, 32 // s), max(1, 32 // s)), r(640), r(640)
    xs, lw, lb = r(2, T, 320), r(320), r(320)
    q, k, v = r(2, 8, T, 40), r(2, 8, T, 40), r(2, 8, T, 40)
    kc, vc = r(2, 8, 77, 40), r(2, 8, 77, 40)
    sm, xgg, xu = r(16, max(1, 1024 // s), T), r(2, T, 2560), r(2, 320, hw // 2, hw // 2)
    lat = [r(2, 4, hw, hw) for _ in range(3)]
    t = F.asarray(np.array([999.0, 999.0], np.float32))
    from minriff.kernels import cuda

    return [
        ("conv3x3 (2,320,64,64)->320", lambda: F.conv2d(x320, w3, b320, 1, 1), 2 * 2 * 320 * hw * hw * 320 * 9, None),
        ("conv1x1 (2,320,64,64)->320", lambda: F.conv2d(x320, w1, b320), 2 * 2 * 320 * hw * hw * 320, None),
        ("linear (8192,320)->1280", lambda: F.linear(xl, wl, bl), 2 * 2 * T * 320 * 1280, None),
        ("group_norm+silu (2,640,32,32) g32", lambda: F.group_norm(xg, 32, gw, gb, 1e-5, silu=True), None,
         2 * xg.nbytes),
        ("layer_norm (2,4096,320)", lambda: F.layer_norm(xs, lw, lb, 1e-5), None, 2 * xs.nbytes),
        ("attention self B2 H8 T4096 D40", lambda: F.attention(q, k, v), 4 * 16 * T * T * 40, None),
        ("attention cross T4096 -> 77", lambda: F.attention(q, kc, vc), 4 * 16 * T * 77 * 40, None),
        ("softmax (16,1024,4096)", lambda: F.softmax(sm), None, 2 * sm.nbytes),
        ("geglu (2,4096,2560)", lambda: F.geglu(xgg), None, xgg.nbytes * 3 // 2),
        ("silu (2,320,64,64)", lambda: F.silu(x320), None, 2 * x320.nbytes),
        ("upsample2x (2,320,32,32)", lambda: F.upsample_nearest2x(xu), None, 5 * xu.nbytes),
        ("timestep_embedding (2,320)", lambda: F.timestep_embedding(t, 320), None, None),
        ("lincomb 3 terms (2,4,64,64)", lambda: cuda.lincomb((0.5, -0.25, 2.0), lat), None, 4 * lat[0].nbytes),
    ]


def _gpu_time(fn, repeat: int) -> float:
    """Median seconds of fn() between two CUDA events (after one warm-up launch that compiles)."""
    import cupy

    fn()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeat):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    return float(np.median(times))


def run(args) -> int:
    from minriff import kernels
    from minriff.kernels.cuda import loader

    F = kernels.ops("cuda")
    quick = bool(getattr(args, "quick", False))
    repeat = args.repeat or (3 if quick else 10)
    if loader.gpu_available():
        import cupy

        n = 2048 if quick else 4096
        a = cupy.random.standard_normal((n, n), dtype=cupy.float32)
        peak = 2 * n**3 / _gpu_time(lambda: a @ a, repeat) / 1e9
        device = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        timer, title = _gpu_time, "minriff bench ops --backend cuda (CUDA-event medians)"
        extra = {"device": device, "cuBLAS sgemm_GFLOP/s": round(peak, 1)}
        cases = _cases(F, quick, tiny=False)
    else:
        print("No GPU here (or MINRIFF_CUDA_EMULATE=1): CUDA kernel timings need a GPU host with CuPy.\n"
              "Below: the CPU *emulator* at 1/8 of the SD sizes, only to exercise the bench; these\n"
              "numbers say nothing about GPU speed.")
        timer, title, peak = timeit, "minriff bench ops --backend cuda (EMULATOR on the CPU, not GPU timings)", None
        extra = {"device": "emulator (CPU)", "shapes": "1/8 of the names' sizes"}
        repeat = args.repeat or 1
        cases = _cases(F, quick, tiny=True)
    rows = []
    for name, fn, flops, nbytes in cases:
        t = timer(fn, repeat)
        rows.append({"op": name, "ms": t * 1e3,
                     "GFLOP/s": flops / t / 1e9 if flops else None,
                     "GB/s": nbytes / t / 1e9 if nbytes else None,
                     "of_sgemm": flops / t / 1e9 / peak if flops and peak else None})
    emit(rows, args.json, title, extra)
    return 0 if all(math.isfinite(r["ms"]) for r in rows) else 1
