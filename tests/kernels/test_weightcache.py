"""kernels.weight_cache: inside the block the cpu backend keeps Winograd-transformed conv weights
per weight array (kernels/cpu/weightcache.py). Cached results equal uncached ones bit for bit;
the budget, the block's end, replaced and freed weights, and in-place writes behave as documented."""
from __future__ import annotations

import gc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff import kernels
from minriff.kernels.cpu import conv as cpu_conv
from minriff.kernels.cpu import weightcache

F = kernels.ops("cpu")


def _case(rng, C=64, O=8, hw=16, dtype=np.float32):
    x = rng.standard_normal((2, C, hw, hw), dtype=np.float32)
    w = (rng.standard_normal((O, C, 3, 3)) * 0.1).astype(dtype)
    b = rng.standard_normal(O).astype(np.float32)
    return x, w, b


def test_the_winograd_path_is_what_is_cached():
    assert cpu_conv.choose_path((2, 64, 16, 16), (8, 64, 3, 3), 1, (1, 1, 1, 1)) == "winograd"


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), C=st.sampled_from([64, 96]), O=st.integers(4, 20), hw=st.sampled_from([16, 17, 33]),
       half=st.booleans())
def test_cached_equals_uncached(seed, C, O, hw, half):
    x, w, b = _case(np.random.default_rng(seed), C, O, hw, np.float16 if half else np.float32)
    want = F.conv2d(x, w, b, padding=1)
    with kernels.weight_cache(1 << 30):
        first = F.conv2d(x, w, b, padding=1)
        f4 = cpu_conv.choose_path(x.shape, w.shape, 1, (1, 1, 1, 1)) == "winograd4"  # hw 33: F(4x4, 3x3)
        assert weightcache.used_bytes() == (36 if f4 else 16) * O * C * 4  # U (16 or 36, O, C) float32 kept
        second = F.conv2d(x, w, b, padding=1)
    assert np.array_equal(first, want) and np.array_equal(second, want)
    assert weightcache.used_bytes() == 0  # dropped at the end of the block


def test_second_call_uses_the_kept_transform(monkeypatch):
    x, w, b = _case(np.random.default_rng(1))
    calls = []
    real = cpu_conv.cpu_winograd.transformed
    monkeypatch.setattr(cpu_conv.cpu_winograd, "transformed", lambda a: calls.append(1) or real(a))
    with kernels.weight_cache(1 << 30):
        for _ in range(3):
            F.conv2d(x, w, b, padding=1)
    assert len(calls) == 1
    F.conv2d(x, w, b, padding=1)  # outside a block: computed per call
    assert len(calls) == 2


def test_f4x4_transform_is_kept_too(monkeypatch):
    x, w, b = _case(np.random.default_rng(1), hw=32)
    assert cpu_conv.choose_path(x.shape, w.shape, 1, (1, 1, 1, 1)) == "winograd4"
    calls = []
    real = cpu_conv.cpu_winograd4.transformed
    monkeypatch.setattr(cpu_conv.cpu_winograd4, "transformed", lambda a: calls.append(1) or real(a))
    want = F.conv2d(x, w, b, padding=1)
    with kernels.weight_cache(1 << 30):
        got = [F.conv2d(x, w, b, padding=1) for _ in range(3)]
        assert weightcache.used_bytes() == 36 * 8 * 64 * 4
    assert len(calls) == 2  # once for `want`, once inside the block
    for g in got:
        np.testing.assert_array_equal(g, want)


def test_budget_limits_what_is_kept():
    rng = np.random.default_rng(2)
    x, w1, b = _case(rng)
    w2 = w1 * 2
    one = 16 * 8 * 64 * 4
    with kernels.weight_cache(one):  # room for one transform only
        F.conv2d(x, w1, b, padding=1)
        F.conv2d(x, w2, b, padding=1)
        assert weightcache.used_bytes() == one
        assert w1.flags.writeable is False and w2.flags.writeable is True
        np.testing.assert_array_equal(F.conv2d(x, w2, b, padding=1), F.conv2d(x, w1 * 2, b, padding=1))
    with kernels.weight_cache(0):
        F.conv2d(x, w1, b, padding=1)
        assert weightcache.used_bytes() == 0
    with pytest.raises(ValueError, match="budget"):
        with kernels.weight_cache(-1):
            pass


def test_weights_are_read_only_inside_and_writable_after():
    x, w, b = _case(np.random.default_rng(3))
    with kernels.weight_cache(1 << 30):
        F.conv2d(x, w, b, padding=1)
        with pytest.raises(ValueError, match="read-only"):
            w[0, 0, 0, 0] = 1.0  # would make the kept transform stale
    w[0, 0, 0, 0] = 1.0
    ro = w.copy()
    ro.flags.writeable = False
    with kernels.weight_cache(1 << 30):
        F.conv2d(x, ro, b, padding=1)
    assert ro.flags.writeable is False  # a read-only weight stays read-only


def test_replaced_and_freed_weights():
    rng = np.random.default_rng(4)
    x, w, b = _case(rng)
    with kernels.weight_cache(1 << 30):
        F.conv2d(x, w, b, padding=1)
        new = w + 1  # a new array (as LoRA merging makes): its own transform
        np.testing.assert_array_equal(F.conv2d(x, new, b, padding=1), _outside(x, new, b))
        before = weightcache.used_bytes()
        del new
        gc.collect()
        assert weightcache.used_bytes() == before - 16 * 8 * 64 * 4  # a freed weight's transform goes too
        again = (w + 2).copy()  # may reuse the freed address: must not hit the old entry
        np.testing.assert_array_equal(F.conv2d(x, again, b, padding=1), _outside(x, again, b))


def _outside(x, w, b):
    depth, weightcache._depth = weightcache._depth, 0
    try:
        return F.conv2d(x, w, b, padding=1)
    finally:
        weightcache._depth = depth


def test_blocks_nest_and_other_backends_ignore_it():
    x, w, b = _case(np.random.default_rng(5))
    with kernels.weight_cache(1 << 30):
        with kernels.weight_cache(0):  # the outermost budget holds
            F.conv2d(x, w, b, padding=1)
        assert weightcache.used_bytes() > 0
    assert weightcache.used_bytes() == 0 and w.flags.writeable
    with kernels.weight_cache(1 << 30, "ref"):
        kernels.ops("ref").conv2d(x, w, b, padding=1)
    with pytest.raises(ValueError, match="unknown kernel backend"):
        kernels.weight_cache(1, "nope")


def _pointers():
    return sorted(a.ctypes.data for arrays in weightcache._pool.values() for a in arrays)


def test_the_next_block_reuses_the_last_blocks_memory():
    """A block's transforms go to a pool when it ends; the next block computes its transforms of
    the same shapes into those buffers (paged in already) and gets the same results."""
    kernels.release_weight_cache()
    rng = np.random.default_rng(3)
    x, w, b = _case(rng)
    _, w2, _ = _case(rng)  # a second weight of the same shape
    want = F.conv2d(x, w2, b, padding=1)
    with kernels.weight_cache(1 << 30):
        F.conv2d(x, w, b, padding=1)
        first_block = {id(a): a.ctypes.data for a in (e[1] for e in weightcache._entries.values())}
    assert kernels.weight_cache_pooled_bytes() == 16 * 8 * 64 * 4 and len(_pointers()) == 1
    pointer = _pointers()[0]
    assert list(first_block.values()) == [pointer]
    with kernels.weight_cache(1 << 30):
        assert np.array_equal(F.conv2d(x, w2, b, padding=1), want)  # another weight: transformed anew...
        (entry,) = weightcache._entries.values()
        assert entry[1].ctypes.data == pointer  # ...into the pooled buffer
        assert kernels.weight_cache_pooled_bytes() == 0
    assert _pointers() == [pointer]
    kernels.release_weight_cache()
    assert kernels.weight_cache_pooled_bytes() == 0 and _pointers() == []


def test_the_pool_holds_at_most_the_budget_and_a_zero_budget_empties_it():
    kernels.release_weight_cache()
    rng = np.random.default_rng(4)
    x, w, b = _case(rng, O=8)
    _, w_big, _ = _case(rng, O=16)
    one, big = 16 * 8 * 64 * 4, 16 * 16 * 64 * 4
    with kernels.weight_cache(1 << 30):
        F.conv2d(x, w, b, padding=1)
        F.conv2d(x, w_big, np.zeros(16, np.float32), padding=1)
    assert kernels.weight_cache_pooled_bytes() == one + big
    with kernels.weight_cache(one):  # a smaller budget: the biggest buffers go first
        assert kernels.weight_cache_pooled_bytes() == one
    with kernels.weight_cache(0):
        assert kernels.weight_cache_pooled_bytes() == 0


def test_a_freed_weights_transform_is_freed_not_pooled():
    kernels.release_weight_cache()
    x, w, b = _case(np.random.default_rng(5))
    with kernels.weight_cache(1 << 30):
        F.conv2d(x, w, b, padding=1)
        del w
        gc.collect()
        assert weightcache.used_bytes() == 0
    assert kernels.weight_cache_pooled_bytes() == 0


def test_float16_weights_are_widened_once_per_block():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((48, 32)).astype(np.float16)
    outside = weightcache.float32_of(w)
    assert outside.dtype == np.float32 and not np.shares_memory(weightcache.float32_of(w), outside)  # per call
    with kernels.weight_cache(1 << 20):
        first = weightcache.float32_of(w)
        assert np.shares_memory(weightcache.float32_of(w), first)  # kept
        np.testing.assert_array_equal(first, w.astype(np.float32))
        assert not w.flags.writeable  # an in-place change would make the kept copy stale
        # a reshaped view made per call (UNet's 1x1 projections) is keyed by the weight it views
        w4 = rng.standard_normal((16, 8, 1, 1)).astype(np.float16)
        a = weightcache.float32_of(w4.reshape(16, 8))
        b = weightcache.float32_of(w4.reshape(16, 8))
        assert a.shape == (16, 8) and np.shares_memory(a, b)
        assert weightcache.used_bytes() == (48 * 32 + 16 * 8) * 4
        f32 = np.ones((4, 4), np.float32)
        assert weightcache.float32_of(f32) is f32  # float32 weights are used as they are
    assert w.flags.writeable
    with kernels.weight_cache(0):  # no budget: widened per call, nothing kept
        assert not np.shares_memory(weightcache.float32_of(w), weightcache.float32_of(w))
        assert weightcache.used_bytes() == 0

