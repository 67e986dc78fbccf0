"""Invariants of the cpu ops (no reference needed), thread-count independence, shape errors
and op registration."""
from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff import kernels
from support.kernel_cases import f32, ops

CPU = ops("cpu")
seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=200)
@given(seed=seeds, n=st.integers(1, 2), groups=st.sampled_from([1, 2, 4, 5]), per_group=st.integers(1, 4),
       hw=st.integers(4, 9), silu=st.just(False))
def test_group_norm_output_is_standardised(seed, n, groups, per_group, hw, silu):
    x = f32(np.random.default_rng(seed), n, groups * per_group, hw, hw, scale=3.0) + np.float32(5.0)
    y = CPU.group_norm(x, groups, np.ones(groups * per_group, np.float32),
                       np.zeros(groups * per_group, np.float32), 1e-6)
    g = y.reshape(n, groups, -1).astype(np.float64)
    np.testing.assert_allclose(g.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(g.var(-1), 1.0, atol=1e-4)  # var/(var + eps) with var ~ 9


@settings(max_examples=200)
@given(seed=seeds, rows=st.integers(1, 9), c=st.sampled_from([1, 2, 7, 64, 101]), spread=st.floats(0.1, 50))
def test_layer_norm_rows_are_standardised(seed, rows, c, spread):
    x = f32(np.random.default_rng(seed), rows, c, scale=spread)
    eps = 1e-12
    y = CPU.layer_norm(x, None, None, eps).astype(np.float64)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
    if c > 1:  # var/(var + eps), not 1: two nearly equal values can have var ~1e-9, where eps shows
        v = x.astype(np.float64).var(-1)
        np.testing.assert_allclose(y.var(-1), v / (v + eps), atol=1e-4)


@settings(max_examples=200)
@given(seed=seeds, rows=st.integers(1, 9), c=st.sampled_from([1, 2, 7, 64, 101, 4096]), spread=st.floats(0.1, 100))
def test_softmax_rows_sum_to_one(seed, rows, c, spread):
    y = CPU.softmax(f32(np.random.default_rng(seed), rows, c, scale=spread))
    assert np.all(y >= 0)
    np.testing.assert_allclose(y.astype(np.float64).sum(-1), 1.0, atol=1e-5)


@settings(max_examples=200)
@given(seed=seeds, tq=st.sampled_from([1, 5, 64]), tk=st.sampled_from([1, 3, 77, 600, 1031]),
       d=st.sampled_from([4, 40]))
def test_attention_equivariant_under_key_permutation(seed, tq, tk, d):
    rng = np.random.default_rng(seed)
    q, k, v = f32(rng, 1, 2, tq, d), f32(rng, 1, 2, tk, d), f32(rng, 1, 2, tk, d)
    perm = rng.permutation(tk)
    a = CPU.attention(q, k, v)
    b = CPU.attention(q, k[:, :, perm], v[:, :, perm])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@settings(max_examples=200)
@given(seed=seeds, t=st.sampled_from([2, 7, 64, 600, 1031]), d=st.sampled_from([3, 40]), data=st.data())
def test_causal_attention_ignores_future_keys(seed, t, d, data):
    rng = np.random.default_rng(seed)
    q, k, v = f32(rng, 1, 2, t, d), f32(rng, 1, 2, t, d), f32(rng, 1, 2, t, d)
    cut = data.draw(st.integers(1, t - 1))
    k2, v2 = k.copy(), v.copy()
    k2[:, :, cut:] = f32(rng, 1, 2, t - cut, d, scale=10.0)
    v2[:, :, cut:] = f32(rng, 1, 2, t - cut, d, scale=10.0)
    a = CPU.attention(q, k, v, causal=True)
    b = CPU.attention(q, k2, v2, causal=True)
    np.testing.assert_array_equal(a[:, :, :cut], b[:, :, :cut])  # queries < cut see only keys < cut
    assert not np.array_equal(a[:, :, cut:], b[:, :, cut:])


@settings(max_examples=200)
@given(seed=seeds, k=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]), pad=st.integers(0, 1),
       alpha=st.floats(-3, 3), beta=st.floats(-3, 3))
def test_conv_is_linear_in_x(seed, k, stride, pad, alpha, beta):
    rng = np.random.default_rng(seed)
    x1, x2, w = f32(rng, 2, 3, 7, 6), f32(rng, 2, 3, 7, 6), f32(rng, 4, 3, k, k)
    a, b = np.float32(alpha), np.float32(beta)
    lhs = CPU.conv2d(a * x1 + b * x2, w, None, stride, pad)
    rhs = a * CPU.conv2d(x1, w, None, stride, pad) + b * CPU.conv2d(x2, w, None, stride, pad)
    scale = CPU.conv2d(np.abs(x1) * abs(a) + np.abs(x2) * abs(b), np.abs(w), None, stride, pad)
    assert np.all(np.abs(lhs - rhs) <= 1e-6 + 1e-5 * scale)


def _all_ops(rng):
    x4 = f32(rng, 2, 8, 9, 7)
    return {
        "conv2d": (x4, f32(rng, 5, 8, 3, 3), f32(rng, 5)),
        "conv2d:taps": (f32(rng, 2, 64, 70, 9), f32(rng, 3, 64, 3, 3), f32(rng, 3), 1, 1),  # < 4 outputs: taps
        "conv2d:batch": (f32(rng, 2, 64, 8, 8), f32(rng, 6, 64, 3, 3), f32(rng, 6), 1, 1),  # one im2col GEMM
        "conv2d:winograd": (f32(rng, 2, 128, 43, 23), f32(rng, 6, 128, 3, 3), f32(rng, 6), 1, 1),  # 4 tile bands
        "conv2d:winograd4": (f32(rng, 2, 64, 70, 41), f32(rng, 6, 64, 3, 3), f32(rng, 6), 1, 1),  # 4 tile bands
        "conv2d:winograd4-channels": (f32(rng, 2, 64, 32, 32), f32(rng, 300, 64, 3, 3), None, 1, 1),  # 3 blocks
        "conv2d:winograd-channels": (f32(rng, 2, 128, 16, 16), f32(rng, 300, 128, 3, 3), None, 1, 1),  # 3 blocks
        "conv2d:1x1": (f32(rng, 1, 8, 50, 50), f32(rng, 3, 8, 1, 1), f32(rng, 3)),  # two pixel bands
        "linear": (f32(rng, 3, 50, 24), f32(rng, 7, 24), f32(rng, 7)),
        "linear:bands": (f32(rng, 2, 1100, 24), f32(rng, 7, 24), f32(rng, 7)),  # 5 bands of 512 rows
        "group_norm": (x4, 4, f32(rng, 8), f32(rng, 8), 1e-5, True),
        "layer_norm": (f32(rng, 3, 50, 24), f32(rng, 24), f32(rng, 24), 1e-5),
        "attention": (f32(rng, 2, 2, 300, 8), f32(rng, 2, 2, 700, 8), f32(rng, 2, 2, 700, 8)),
        # one head, 1000 queries: the work is split into query ranges whose count depends on the
        # thread count; causal, so each range also stops at its own last key tile
        "attention:split": (f32(rng, 1, 1, 1000, 40), f32(rng, 1, 1, 1000, 40), f32(rng, 1, 1, 1000, 40), None, True),
        "softmax": (f32(rng, 30, 70),),
        "silu": (x4,), "gelu": (x4,), "quick_gelu": (x4,), "relu": (x4,), "relu:residual": (x4, x4[::-1].copy()),
        "geglu": (f32(rng, 4, 30, 10),),
        "upsample_nearest2x": (x4,),
        "timestep_embedding": (np.array([1.0, 500.0, 999.0], np.float32), 33),
    }


def test_results_do_not_depend_on_thread_count():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread here")
    cases = _all_ops(np.random.default_rng(0))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = {name: getattr(CPU, name.split(":")[0])(*a) for name, a in cases.items()}
        numba.set_num_threads(2)
        two = {name: getattr(CPU, name.split(":")[0])(*a) for name, a in cases.items()}
    finally:
        numba.set_num_threads(before)
    for op in cases:
        np.testing.assert_array_equal(one[op], two[op], err_msg=op)


BAD = {
    "conv2d": [((np.zeros((1, 3, 5, 5)), np.zeros((2, 4, 3, 3))), "channels"),
               ((np.zeros((3, 5, 5)), np.zeros((2, 3, 3, 3))), "4-D"),
               ((np.zeros((1, 3, 2, 2)), np.zeros((2, 3, 3, 3))), "larger"),
               ((np.zeros((1, 3, 5, 5)), np.zeros((2, 3, 3, 3)), np.zeros(3)), "bias")],
    "linear": [((np.zeros((2, 5)), np.zeros((3, 4))), "in-features"),
               ((np.zeros((2, 4)), np.zeros((3, 4)), np.zeros(4)), "bias")],
    "group_norm": [((np.zeros((1, 6, 2, 2)), 4, None, None, 1e-5), "groups"),
                   ((np.zeros((1, 6, 2)), 3, np.zeros(5), None, 1e-5), "weight")],
    "layer_norm": [((np.zeros((2, 5)), np.zeros(4), None, 1e-5), "weight")],
    "attention": [((np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 5, 8)), np.zeros((1, 2, 5, 8))), "head dims"),
                  ((np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 5, 4)), np.zeros((1, 2, 6, 4))), "agree"),
                  ((np.zeros((2, 3, 4)),) * 3, "4-D")],
    "softmax": [((np.zeros((2, 3)), 2), "axis")],
    "geglu": [((np.zeros((2, 3)),), "even")],
    "relu": [((np.zeros((2, 3)), np.zeros((3, 2))), "residual shape"), (([1.0, -1.0],), "expected an array")],
    "upsample_nearest2x": [((np.zeros((2, 3, 4)),), "4-D")],
    "timestep_embedding": [((np.zeros((2, 1)), 8), "1-D"), ((np.zeros(2), 1), "dim"),
                           ((np.zeros(2), 3, True, 1.0), "divide by zero")],
}


@pytest.mark.parametrize("op,args,words", [(op, a, w) for op, cases in BAD.items() for a, w in cases])
def test_wrong_shapes_raise_clear_value_error(op, args, words):
    with pytest.raises(ValueError, match=words) as e:
        getattr(CPU, op)(*args)
    assert op in str(e.value)


def test_registered_replacement_is_used_and_still_checked():
    calls = []

    def my_softmax(x, axis=-1):
        calls.append(x.shape)
        return kernels.ops("ref").softmax(x, axis)

    kernels.register("cpu", "softmax", my_softmax)
    try:
        F = kernels.ops("cpu")
        x = np.zeros((2, 3), np.float32)
        np.testing.assert_allclose(F.softmax(x), 1 / 3)
        assert calls == [(2, 3)]
        with pytest.raises(ValueError, match="axis"):
            F.softmax(x, axis=5)
        assert calls == [(2, 3)]  # the check ran before the replacement
        assert F.conv2d is not None and F.silu(x).shape == (2, 3)  # other ops untouched
    finally:
        kernels.unregister("cpu", "softmax")
    assert kernels.ops("cpu").softmax(np.zeros((1, 4), np.float32)).sum() == pytest.approx(1.0)
    assert kernels.ops("cpu").softmax.impl is not my_softmax
