"""minriff.kernels — the op layer. No model knowledge lives here.

An op is a plain function on arrays (NCHW images, (B, T, C) sequences, float32 compute).
Each op exists per backend with the same signature:

    ref   NumPy, written to be read (float64-capable)       kernels/ref.py
    cpu   Numba, the fast CPU path                          kernels/cpu/      (README: writing a CPU kernel)
    cuda  CUDA C compiled by CuPy (or the CPU emulator)     kernels/cuda/     (README: writing a CUDA kernel)

An op is declared once, in checks.py (`@op def name(...)`: its signature and argument checks);
a backend implements it by defining a function of the same name in its module. Adding an op to
all three backends: the `@op` check, a function in ref.py, cpu/__init__.py (usually calling a
kernel in its own cpu/ file) and cuda/ops.py (launching a kernel in a .cu file). Nothing else
lists ops. This package imports nothing from minriff's models: kernels know arrays, not networks.

Usage:
    from minriff import kernels
    F = kernels.ops("cpu")          # namespace of ops for one backend
    kernels.backend("cpu")          # choose the backend model code uses
    F = kernels.ops()               # ... the chosen one
    kernels.register("cpu", "softmax", my_softmax)   # swap one op (until unregister)
    with kernels.override("cpu", "softmax", my_softmax) as F:
        ...                         # swapped inside the block only; the previous op (built-in or
                                    # an earlier register) is back afterwards, even on an exception

Every op goes through its check in `checks.py` before reaching the backend, so a replacement
kernel gets the same clear `ValueError`s for bad input as the built-in ones.
"""
from __future__ import annotations

import contextlib
import importlib
import types

from minriff.kernels import checks

OP_NAMES = tuple(checks.OPS)  # declared in checks.py, one `@op` each

BACKENDS = ("ref", "cpu", "cuda")
_MODULES = {"ref": ".ref", "cpu": ".cpu", "cuda": ".cuda.ops"}  # where each backend defines its ops

_overrides: dict[str, dict[str, object]] = {b: {} for b in BACKENDS}
_cache: dict[str, types.SimpleNamespace] = {}
_current = "cpu"


def _load(name: str) -> types.SimpleNamespace:
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name in _cache:
        return _cache[name]
    mod = importlib.import_module(_MODULES[name], __name__)
    ns = types.SimpleNamespace(name=name, xp=getattr(mod, "xp", None) or importlib.import_module("numpy"))
    for op in OP_NAMES:
        impl = _overrides[name].get(op) or getattr(mod, op, None)
        if impl is None:
            raise NotImplementedError(f"backend {name!r} has no op {op!r}")
        setattr(ns, op, checks.checked(op, impl))
        setattr(ns, op + "_unchecked", impl)
    # Extra backend helpers (e.g. asarray / to_host for device backends) pass through.
    for extra in ("asarray", "to_host"):
        setattr(ns, extra, getattr(mod, extra, None) or _identity_asarray(ns.xp, extra))
    _cache[name] = ns
    return ns


def weight_cache(budget_bytes: int, backend_name: str | None = None):
    """A context manager: inside it the backend (default: the current one) may keep forms it
    derives from weight arrays, up to `budget_bytes`, and reuse them while the same arrays come
    back, e.g. across the steps of a sampling loop (cpu: Winograd-transformed 3x3 conv weights,
    cpu/weightcache.py). Backends without such forms ignore it. Weights must not be changed in
    place inside the block (cpu makes cached ones read-only meanwhile); replacing them is fine."""
    make = _weightcache_fn(backend_name, "weight_cache")
    return make(budget_bytes) if make is not None else contextlib.nullcontext()


def _weightcache_fn(name: str | None, fn: str):
    """The backend's (default: the current one's) function `fn`, or None where it has none."""
    name = name or _current
    _load(name)  # an unknown name fails here
    return getattr(importlib.import_module(_MODULES[name], __name__), fn, None)


def weight_cache_pooled_bytes(backend_name: str | None = None) -> int:
    """Bytes the backend keeps between weight_cache blocks for the next block's derived forms
    (cpu: the last block's arrays, reused as buffers: memory already paged in)."""
    fn = _weightcache_fn(backend_name, "weight_cache_pooled_bytes")
    return int(fn()) if fn is not None else 0


def release_weight_cache(backend_name: str | None = None) -> None:
    """Free what the backend keeps between weight_cache blocks."""
    fn = _weightcache_fn(backend_name, "release_weight_cache")
    if fn is not None:
        fn()


def _identity_asarray(xp, which):
    if which == "asarray":
        return lambda a, dtype=None: xp.asarray(a, dtype=dtype)
    return lambda a: a


def ops(name: str | None = None) -> types.SimpleNamespace:
    """The ops of one backend (default: the one chosen with `backend`)."""
    return _load(name or _current)


def backend(name: str | None = None) -> str:
    """Choose the backend model code uses; with no argument, return the current one."""
    global _current
    if name is not None:
        _load(name)  # fail now, not at first use
        _current = name
    return _current


def register(backend_name: str, op: str, fn) -> None:
    """Replace one op of a backend. The shape checks still run in front of it."""
    if backend_name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend_name!r}")
    if op not in OP_NAMES:
        raise ValueError(f"unknown op {op!r}; ops are {', '.join(OP_NAMES)}")
    _overrides[backend_name][op] = fn
    _cache.pop(backend_name, None)


def unregister(backend_name: str, op: str) -> None:
    _overrides[backend_name].pop(op, None)
    _cache.pop(backend_name, None)


_BUILT_IN = object()


@contextlib.contextmanager
def override(backend_name: str, op: str, fn):
    """`with override("cpu", "softmax", fn) as F:` — `fn` replaces the op for the block (behind the
    same shape checks; F is the backend's namespace with it). On leaving, normally or by an
    exception, the op is whatever it was before: the built-in or an earlier `register`/`override`.
    Blocks nest. Model code looks ops up per call (`kernels.ops()`), so it sees the swap; a
    namespace fetched *before* the block keeps the old functions."""
    if not callable(fn):
        raise TypeError(f"override({backend_name!r}, {op!r}, ...): the replacement must be callable, "
                        f"got {type(fn).__name__}")
    if backend_name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend_name!r}")
    previous = _overrides[backend_name].get(op, _BUILT_IN)
    register(backend_name, op, fn)
    try:
        yield ops(backend_name)
    finally:
        if previous is _BUILT_IN:
            unregister(backend_name, op)
        else:
            register(backend_name, op, previous)
