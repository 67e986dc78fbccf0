"""Live oracle: each cpu op against torch.nn.functional (and diffusers' get_timestep_embedding)
on drawn inputs, to 1e-5 relative (scaled as in support.kernel_cases.error_scale)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from support import fixture_script, oracle
from support.kernel_cases import assert_close, error_scale, f32, ops, tile_scale

pytestmark = pytest.mark.oracle
CPU = ops("cpu")


def _torch_op():
    oracle("torch")
    return fixture_script("make_kernels").torch_op


def check(op, *args, tiles=False, **kw):
    """tiles: the error scale taken over each output's 4x4 tile (Winograd F(4x4, 3x3), tile_scale)."""
    want = _torch_op()(op, *args, **kw)
    got = getattr(CPU, op)(*args, **kw)
    scale = error_scale(op, args, kw)
    assert_close(got, want, tile_scale(scale) if tiles else scale, what=op)


few = settings(max_examples=40)
seeds = st.integers(0, 2**32 - 1)


@few
@given(seed=seeds, k=st.sampled_from([1, 3, 5]), stride=st.sampled_from([1, 2]),
       padding=st.one_of(st.integers(0, 2), st.just((0, 1, 0, 1)), st.tuples(*[st.integers(0, 2)] * 4)))
def test_conv2d_vs_torch(seed, k, stride, padding):
    rng = np.random.default_rng(seed)
    check("conv2d", f32(rng, 2, 4, 11, 10), f32(rng, 5, 4, k, k), f32(rng, 5), stride=stride, padding=padding)


@pytest.mark.parametrize("path", ["winograd4", "winograd", "taps", "batch", "im2col"])
@settings(max_examples=10)
@given(seed=seeds, hw=st.tuples(st.integers(3, 21), st.integers(3, 21)),
       padding=st.one_of(st.just(1), st.just(0), st.tuples(*[st.integers(0, 2)] * 4)))
def test_conv3x3_paths_vs_torch(path, seed, hw, padding):
    # SD-like channel counts through each 3x3 path (the drawn convs above are too small for most)
    from minriff.kernels.cpu import conv as cpu_conv

    rng = np.random.default_rng(seed)
    x, w, b = f32(rng, 2, 128, *hw), f32(rng, 24, 128, 3, 3), f32(rng, 24)
    saved, cpu_conv.FORCE_PATH = cpu_conv.FORCE_PATH, path
    try:
        check("conv2d", x, w, b, stride=1, padding=padding, tiles=path == "winograd4")
    finally:
        cpu_conv.FORCE_PATH = saved


@few
@given(seed=seeds, fin=st.sampled_from([1, 7, 320]), fout=st.sampled_from([1, 13, 64]))
def test_linear_vs_torch(seed, fin, fout):
    rng = np.random.default_rng(seed)
    check("linear", f32(rng, 2, 9, fin), f32(rng, fout, fin), f32(rng, fout))


@few
@given(seed=seeds, groups=st.sampled_from([1, 2, 4, 32]), silu=st.booleans())
def test_group_norm_vs_torch(seed, groups, silu):
    rng = np.random.default_rng(seed)
    check("group_norm", f32(rng, 2, 64, 6, 5, scale=3.0) + np.float32(1), groups, f32(rng, 64), f32(rng, 64), 1e-5,
          silu=silu)


@few
@given(seed=seeds, c=st.sampled_from([1, 40, 320, 768]))
def test_layer_norm_vs_torch(seed, c):
    rng = np.random.default_rng(seed)
    check("layer_norm", f32(rng, 2, 7, c), f32(rng, c), f32(rng, c), 1e-5)


@few
@given(seed=seeds, tq=st.sampled_from([1, 7, 64, 600]), tk=st.sampled_from([1, 77, 600, 1031]),
       d=st.sampled_from([8, 40]), causal=st.booleans(), scale=st.sampled_from([None, 0.25]))
def test_attention_vs_torch(seed, tq, tk, d, causal, scale):
    rng = np.random.default_rng(seed)
    check("attention", f32(rng, 1, 2, tq, d), f32(rng, 1, 2, tk, d), f32(rng, 1, 2, tk, d), scale=scale, causal=causal)


@few
@given(seed=seeds, op=st.sampled_from(["softmax", "silu", "gelu", "quick_gelu", "relu", "geglu", "upsample_nearest2x"]),
       spread=st.floats(0.1, 10))
def test_elementwise_vs_torch(seed, op, spread):
    x = f32(np.random.default_rng(seed), 2, 3, 6, 8, scale=spread)
    check(op, x)


@few
@given(t=st.lists(st.floats(0, 1000, width=32), min_size=1, max_size=4), dim=st.sampled_from([4, 33, 320, 1280]),
       flip=st.booleans(), shift=st.sampled_from([0.0, 1.0]))
@example(t=[609.9921875], dim=1280, flip=False, shift=1.0)
def test_timestep_embedding_vs_diffusers(t, dim, flip, shift):
    oracle("diffusers")
    check("timestep_embedding", np.array(t, np.float32), dim, flip_sin_to_cos=flip, shift=shift)
