"""Derived forms of weight arrays, kept while a `kernels.weight_cache(budget)` block runs.

A Winograd conv multiplies by its weights transformed (U = G w Gᵀ, winograd.py). Computing U on
every call costs a pass over the weights and a write of 16/9 (F(2x2, 3x3)) of them as float32:
~0.2 s of a full-size UNet step, plus the memory traffic of writing U and reading it back. A
sampling loop calls the same UNet with the same weights 30 times, so inside the loop U is kept:

    with kernels.weight_cache(2 << 30):       # at most 2 GiB of derived arrays
        for t in timesteps:
            eps = unet(x, t, context)         # the first step fills the cache, the others reuse it

Entries are keyed by the weight array's identity (a weak reference: a freed or replaced array is
never matched by a new one at the same address) and by what was derived. Arrays are added first
come, first served until the budget is spent; beyond it they are derived per call as without the
cache. Leaving the outermost block drops everything.

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

_lock = threading.RLock()  # re-entrant: a weak reference's callback may run inside a locked region
_depth = 0
_budget = 0
_used = 0
_entries: dict = {}  # (id(w), kind) -> (weakref(w), derived array, w was writeable)


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
    for ref, _derived, writeable in _entries.values():
        w = ref()
        if w is not None and writeable:
            w.flags.writeable = True
    _entries.clear()
    _used = 0


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
