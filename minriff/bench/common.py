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


def interleaved_medians(steps: dict, repeat: int, settle_s: float = 0.0) -> dict:
    """{name: median seconds} of each callable in `steps`, timed in `repeat` interleaved rounds (each
    round runs every step once, after `settle_s` of sleep), so machine load hits every step alike."""
    times = {name: [] for name in steps}
    for _ in range(repeat):
        for name, step in steps.items():
            time.sleep(settle_s)
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def sgemm_gflops(n: int = 1024, repeat: int = 5) -> float:
    """Same-run BLAS peak estimate: float32 n×n×n matmul."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    t = timeit(lambda: a @ b, repeat=repeat)
    return 2 * n**3 / t / 1e9


def warm_time(fn) -> float:
    """Wall time in seconds of fn() called right after an untimed fn(): the first call wakes
    thread pools that went to sleep meanwhile, so the op is timed as it runs in a model step."""
    fn()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def torch_or_none():
    try:
        import torch  # test/bench-only oracle, never used by minriff itself
        return torch
    except Exception:
        return None


def torch_text_encoder(text_encoder, dtype=np.float32):
    """transformers' CLIPTextModel holding the values of minriff's text encoder (for the child-process
    baselines). Every parameter must be filled: transformers 5 dropped the `text_model.` prefix that
    4.x keeps, and a silently unloaded model would compute on its random init."""
    import torch
    import transformers

    t = text_encoder.config
    te = transformers.CLIPTextModel(transformers.CLIPTextConfig(  # not on "meta": it has unsaved buffers
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
        projection_dim=t.projection_dim, max_position_embeddings=t.max_position_embeddings,
        hidden_act=t.hidden_act, layer_norm_eps=t.layer_norm_eps))
    names = set(te.state_dict())
    state = {k if k in names else k.removeprefix("text_model."): torch.from_numpy(np.asarray(v, dtype))
             for k, v in text_encoder.named_parameters()}
    te.load_state_dict({k: v for k, v in state.items() if k in names}, strict=False, assign=True)
    missing = sorted(k for k in names if k not in state and not k.endswith("position_ids"))
    unused = sorted(k for k in state if k not in names)
    if missing or unused:
        raise RuntimeError(f"text encoder keys not filled: {missing[:3]}, not used: {unused[:3]}")
    return te.eval()


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


class ChildTimer:
    """Times callables in a fresh process (multiprocessing "spawn"), one call per request, so a
    benchmark can interleave rounds between itself and the child.

    Why: once Numba's OpenMP threading layer has started in a process (any parallel minriff
    kernel, or numba.get_num_threads()), torch's own OpenMP pool in that process runs several
    times slower — measured here at 2 threads: scaled_dot_product_attention 59 ms in a clean
    process, 344 ms after numba's layer started. Timing torch beside minriff would flatter
    minriff; in a child process torch runs as it would for a torch user.

    `factory` is a module-level function (it is pickled by reference); in the child it is called
    as factory(*args, threads=threads) and returns {key: callable}. time(key) is warm_time of that
    callable, measured in the child."""

    def __init__(self, factory, args: tuple = (), threads: int | None = None):
        import multiprocessing
        import os

        import minriff

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(child, factory, args, threads), daemon=True)
        # the child gets the environment torch users have: without minriff's thread-pool defaults
        saved = {k: os.environ.pop(k) for k in minriff.ENV_DEFAULTS if k in os.environ}
        os.environ["MINRIFF_THREAD_DEFAULTS"] = "0"  # also when the child imports minriff
        try:
            self._proc.start()
        finally:
            del os.environ["MINRIFF_THREAD_DEFAULTS"]
            os.environ.update(saved)
        child.close()
        kind, value = self._recv()
        if kind != "ready":
            self.close()
            raise RuntimeError(f"benchmark child process failed to start: {value}")

    def _recv(self):
        try:
            return self._conn.recv()
        except EOFError:
            return "error", f"child process exited (code {self._proc.exitcode})"

    def time(self, key, warm: bool = True) -> float:
        """warm: warm_time (an untimed call first); False: one timed call (for long, stateful stages)."""
        return self._ask("time" if warm else "once", key)

    def value(self, key):
        """Run the callable once more and return its result (pickled across)."""
        return self._ask("value", key)

    def _ask(self, what, key):
        self._conn.send((what, key))
        kind, value = self._recv()
        if kind != what:
            raise RuntimeError(f"benchmark child process: {value}")
        return value

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()


def _child_main(conn, factory, args, threads):
    try:
        fns = factory(*args, threads=threads)
    except Exception as e:  # reported to the parent, which raises it
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", list(fns)))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        what, key = msg
        try:
            if what == "value":
                conn.send(("value", fns[key]()))
                continue
            if what == "once":
                t0 = time.perf_counter()
                fns[key]()
                conn.send(("once", time.perf_counter() - t0))
                continue
            conn.send(("time", warm_time(fns[key])))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))
