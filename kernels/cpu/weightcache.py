"""Derived forms of weight arrays, kept while a `kernels.weight_cache(budget)` block runs.

A Winograd conv multiplies by its weights transformed (U = G w Gᵀ, winograd.py). Computing U on
every call costs a pass over the weights and a write of 16/9 (F(2x2, 3x3)) of them as float32:
~0.2 s of a full-size UNet step, plus the memory traffic of writing U and reading it back. A
sampling loop calls the same UNet with the same weights 30 times, so inside the loop U is kept:

    with kernels.weight_cache(2 << 30):       # at most 2 GiB of derived arrays
        for t in timesteps:
            eps = unet(x, t, context)         # the first step fills the cache, the others reuse it

Also kept: float16 weights widened to float32 for BLAS (`float32_of`; linear layers, the 8x8
convs' GEMMs), 1.2 GiB for SD 1.5, which otherwise widen on every call: a full-size step 5.79
against 5.87 s (5 interleaved rounds).

Entries are keyed by the weight array's identity (a weak reference: a freed or replaced array is
never matched by a new one at the same address) and by what was derived. Arrays are added first
come, first served until the budget is spent; beyond it they are derived per call as without the
cache. Leaving the outermost block drops every entry.

The memory is kept, though: a dropped entry's array goes to a pool of buffers, from which the
next block's derived forms of the same shape are computed (`empty`). A first write to fresh
memory is a page fault, and on this VM filling SD 1.5's 4.4 GB of transforms into fresh arrays
took 5.0 s against ~0.3 s into memory already paged in: a resident pipeline (serve, batch, a
notebook) paid ~5 s on every loop. The pool holds at most the last block's budget, a block with
budget 0 empties it, and `release()` frees it (`kernels.release_weight_cache()`).

While an array is cached it is made read-only, and made writable again on leaving: a weight
changed in place inside the block (which would make its cached form stale) raises numpy's
"assignment destination is read-only" instead of silently using old values. Replacing a weight
(`module.weight = new`, as LoRA merging and `Riffusion.set_parameters` do) is fine: the new array
is a new key.
"""
from __future__ import annotations

import contextlib
import threading
import weakref

import numpy as np

from minriff.kernels.cpu import half

_lock = threading.RLock()  # re-entrant: a weak reference's callback may run inside a locked region
_depth = 0
_budget = 0
_used = 0
_entries: dict = {}  # (id(w), kind) -> (weakref(w), derived array, w was writeable)
_pool: dict = {}  # (shape, dtype) -> [arrays no entry uses any more]
_pooled = 0  # bytes in _pool


@contextlib.contextmanager
def weight_cache(budget_bytes: int):
    """Keep derived weight forms (up to `budget_bytes`) inside the block. Blocks nest: the
    outermost one's budget holds, and its end drops the cache."""
    global _depth, _budget, _used
    budget = int(budget_bytes)
    if budget < 0:
        raise ValueError(f"weight_cache: budget must be >= 0 bytes, got {budget_bytes!r}")
    with _lock:
        if _depth == 0:
            _budget, _used = budget, 0
            _trim_pool(budget)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _drop_all()


def _drop_all() -> None:
    global _used
    for ref, derived_array, writeable in _entries.values():
        w = ref()
        if w is not None and writeable:
            w.flags.writeable = True
        _to_pool(derived_array)
    _entries.clear()
    _used = 0
    _trim_pool(_budget)


def _to_pool(a: np.ndarray) -> None:
    global _pooled
    _pool.setdefault((a.shape, a.dtype.str), []).append(a)
    _pooled += a.nbytes


def _trim_pool(limit: int) -> None:
    """Free pooled buffers, biggest first, until at most `limit` bytes stay."""
    global _pooled
    while _pooled > limit:
        key = max(_pool, key=lambda k: _pool[k][0].nbytes)
        a = _pool[key].pop()
        if not _pool[key]:
            del _pool[key]
        _pooled -= a.nbytes


def empty(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised array for a derived form: a pooled buffer of that shape when a block is
    active and one is free (paged in already), else a new one."""
    global _pooled
    shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    if _depth:
        with _lock:
            free = _pool.get((shape, dtype.str))
            if free:
                a = free.pop()
                if not free:
                    del _pool[(shape, dtype.str)]
                _pooled -= a.nbytes
                return a
    return np.empty(shape, dtype)


def release() -> None:
    """Free the pooled buffers now (entries of an active block stay)."""
    with _lock:
        _trim_pool(0)


def pooled_bytes() -> int:
    return _pooled


def active() -> bool:
    return _depth > 0


def derived(w, kind: str, make):
    """make() -> an array derived from weight `w` (a numpy array), from the cache when a block is
    active and `w` was seen before; else computed (and kept, while the budget allows)."""
    global _used
    if _depth == 0 or not isinstance(w, np.ndarray):
        return make()
    key = (id(w), kind)
    hit = _entries.get(key)
    if hit is not None and hit[0]() is w:
        return hit[1]
    out = make()
    with _lock:
        if _depth == 0 or _used + out.nbytes > _budget or key in _entries and _entries[key][0]() is w:
            return out
        writeable = bool(w.flags.writeable)
        stale = _entries.pop(key, None)  # an earlier array at the same address, freed since
        if stale is not None:
            _used -= stale[1].nbytes
        w.flags.writeable = False
        _entries[key] = (weakref.ref(w, lambda ref, key=key: _forget(key, ref)), out, writeable)
        _used += out.nbytes
    return out


def float32_of(w, key=None, scratch: str | None = None):
    """Weight `w` (float16 or float32) as C-contiguous float32. Inside a block a float16 weight is
    widened once and kept (kind "float32", under `key`: the array the caller holds, when `w` is a
    view made per call); outside one, or for float32, `half.as_float32(w, scratch)` (widened per
    call, into the calling thread's workspace buffer `scratch` when given)."""
    if _depth == 0 or not half.is_half(w):
        return half.as_float32(w, scratch)
    if key is None:  # a reshaped view of the caller's weight (as UNet's 1x1 projections pass) -> that weight
        base = w.base
        same = isinstance(base, np.ndarray) and base.dtype == w.dtype and base.size == w.size
        key = base if same and base.flags.c_contiguous and w.flags.c_contiguous else w
    if not isinstance(key, np.ndarray) or key.size != w.size:
        return half.as_float32(w, scratch)

    def make():
        out = empty(key.shape)
        half.widen_flat(np.ascontiguousarray(key).view(np.uint16).reshape(-1), out.reshape(-1))
        return out

    return derived(key, "float32", make).reshape(w.shape)


def _forget(key, ref) -> None:
    """A cached weight was freed: free its derived form too."""
    global _used
    with _lock:
        hit = _entries.get(key)
        if hit is not None and hit[0] is ref:
            del _entries[key]
            _used -= hit[1].nbytes


def used_bytes() -> int:
    return _used
