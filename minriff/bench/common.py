"""Timing helpers shared by the benchmarks."""
from __future__ import annotations

import json
import resource
import statistics
import time

import numpy as np


def timeit(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sgemm_gflops(n: int = 1024, repeat: int = 5) -> float:
    """Same-run BLAS peak estimate: float32 n×n×n matmul."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    t = timeit(lambda: a @ b, repeat=repeat)
    return 2 * n**3 / t / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def torch_or_none():
    try:
        import torch  # test/bench-only oracle, never used by minriff itself
        return torch
    except Exception:
        return None


def emit(rows: list[dict], as_json: bool, title: str, extra: dict | None = None) -> None:
    if as_json:
        print(json.dumps({"title": title, **(extra or {}), "rows": rows}, indent=2))
        return
    print(title)
    for k, v in (extra or {}).items():
        print(f"  {k}: {v}")
    if not rows:
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  " + "  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  " + "  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "-" if v is None else str(v)
