"""Winograd F(4x4, 3x3) (kernels/cpu/winograd4.py): its matrices against a direct conv in
float64, the conv through FORCE_PATH="winograd4" against ref over drawn shapes, paddings, odd
sizes and float16 weights (both kinds of work items), transformed weights passed in, and the
path choice.

Tolerance: the usual rule (assert_close, 1e-5 relative to |x| conv |w|), with the scale taken
over each output's 4x4 tile (support.kernel_cases.tile_scale says why: it matters at image
borders only).
F(4x4, 3x3) is ~15x less accurate than F(2x2, 3x3) in float32 (measured max error relative to
|x| conv |w| at SD shapes, C = 256..1280: 1.4-2.0e-6, against 0.7-1.1e-7), and the float32 GEMMs
are where it comes from: they sum products of the transformed operands, whose magnitudes the
transforms inflate (Aᵀ's entries reach 8), while rounding U and V to float32 alone costs 1e-7.
test_error_at_sd_depth_is_bounded keeps the measured level from silently getting worse."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff.kernels.cpu import conv as cpu_conv
from minriff.kernels.cpu import winograd4
from support.kernel_cases import as64, assert_close, f32, ops, tile_scale

REF, CPU = ops("ref"), ops("cpu")
seeds = st.integers(0, 2**32 - 1)
paddings = st.one_of(st.integers(0, 2), st.tuples(*[st.integers(0, 2)] * 4))


def _direct(d, g):
    """Valid 3x3 correlation of a 6x6 patch: the 4x4 block a tile stands for."""
    return np.array([[np.sum(d[i : i + 3, j : j + 3] * g) for j in range(4)] for i in range(4)])


@settings(max_examples=50)
@given(seed=seeds)
def test_matrices_compute_a_4x4_block_of_the_direct_conv(seed):
    rng = np.random.default_rng(seed)
    d, g = rng.standard_normal((6, 6)), rng.standard_normal((3, 3))
    A, B, G = winograd4.AT.T, winograd4.BT.T, winograd4.G
    y = A.T @ ((G @ g @ G.T) * (B.T @ d @ B)) @ A
    np.testing.assert_allclose(y, _direct(d, g), rtol=0, atol=1e-12 * np.abs(d).sum() * np.abs(g).sum())


def test_matrices_are_lavin_grays_points_0_pm1_pm2_inf():
    # Aᵀ's rows are the powers 0..3 of the points (0, 1, -1, 2, -2) plus the point at infinity
    points = np.array([0.0, 1.0, -1.0, 2.0, -2.0])
    want = np.zeros((4, 6))
    want[:, :5] = points[None, :] ** np.arange(4)[:, None]
    want[3, 5] = 1
    np.testing.assert_array_equal(winograd4.AT, want)
    assert winograd4.BT.shape == (6, 6) and winograd4.G.shape == (6, 3)


@contextlib.contextmanager
def winograd4_items(rows: bool):
    """F(4x4, 3x3) for every 3x3 stride-1 conv, with work items by tile rows (rows) or by blocks
    of 4 output channels (the drawn images are small: normally always channel blocks of 128)."""
    saved = cpu_conv.FORCE_PATH, winograd4.BATCH_TILES, winograd4.CHANNEL_BLOCK
    cpu_conv.FORCE_PATH = "winograd4"
    winograd4.BATCH_TILES, winograd4.CHANNEL_BLOCK = (0 if rows else 10**9), 4
    try:
        yield
    finally:
        cpu_conv.FORCE_PATH, winograd4.BATCH_TILES, winograd4.CHANNEL_BLOCK = saved


@settings(max_examples=150)
@given(seed=seeds, n=st.integers(1, 2), c=st.integers(1, 40), o=st.integers(1, 11), h=st.integers(1, 23),
       w=st.integers(1, 23), padding=paddings, bias=st.booleans(), half=st.booleans(), rows=st.booleans())
def test_conv3x3_matches_ref(seed, n, c, o, h, w, padding, bias, half, rows):
    rng = np.random.default_rng(seed)
    pads = (padding,) * 4 if isinstance(padding, int) else padding
    h, w = max(h, 3 - pads[0] - pads[1]), max(w, 3 - pads[2] - pads[3])
    x, b = f32(rng, n, c, h, w), (f32(rng, o) if bias else None)
    wt = (rng.standard_normal((o, c, 3, 3)) * 0.3).astype(np.float16 if half else np.float32)
    with winograd4_items(rows):
        assert cpu_conv.choose_path(x.shape, wt.shape, 1, pads) == "winograd4"
        got = CPU.conv2d(x, wt, b, stride=1, padding=padding)
    want = REF.conv2d(as64(x), as64(wt), as64(b), stride=1, padding=padding)
    scale = REF.conv2d(np.abs(as64(x)), np.abs(as64(wt)), None if b is None else np.abs(as64(b)), 1, padding)
    assert got.dtype == np.float32
    assert_close(got, want, tile_scale(scale), what=f"winograd4 by {'tile rows' if rows else 'channel blocks'}")


@pytest.mark.parametrize("rows", [False, True])
@pytest.mark.parametrize("half", [False, True])
def test_given_transformed_weights_equal_computed_ones(rows, half):
    rng = np.random.default_rng(3)
    x, b = f32(rng, 2, 16, 19, 22), f32(rng, 7)
    w = (rng.standard_normal((7, 16, 3, 3)) * 0.3).astype(np.float16 if half else np.float32)
    wk = w.view(np.uint16) if half else w
    u = np.empty((36, 7, 16), np.float32)
    winograd4.transform_weights(wk, u)
    got, want = np.empty((2, 7, 19, 22), np.float32), np.empty((2, 7, 19, 22), np.float32)
    with winograd4_items(rows):
        winograd4.conv3x3(x, wk, b, (1, 1, 1, 1), want)
        winograd4.conv3x3(x, wk, b, (1, 1, 1, 1), got, u=u)
    np.testing.assert_array_equal(got, want)
    # and u is G g Gᵀ of the (widened) weights, correctly rounded from float64 up to the sixths' rounding
    g = w.astype(np.float64)
    exact = np.einsum("ij,ocjk,lk->iloc", winograd4.G, g, winograd4.G).reshape(36, 7, 16)
    np.testing.assert_allclose(u, exact, rtol=2**-23, atol=1e-30)


def test_wrong_transformed_weights_are_refused():
    x, w = np.zeros((1, 4, 8, 8), np.float32), np.zeros((5, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="transformed weights"):
        bad_u = np.zeros((16, 5, 4), np.float32)  # F(2x2, 3x3)'s shape
        winograd4.conv3x3(x, w, None, (1, 1, 1, 1), np.empty((1, 5, 8, 8), np.float32), u=bad_u)


@pytest.mark.parametrize("c, hw, rows", [(640, 12, False), (1280, 9, True)])
def test_error_at_sd_depth_is_bounded(c, hw, rows):
    # SD's channel depth (the error's source is the C-long float32 sums), small images to keep it cheap
    rng = np.random.default_rng(c)
    x = f32(rng, 1, c, hw, hw)
    w = (rng.standard_normal((6, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    with winograd4_items(rows):
        got = CPU.conv2d(x, w, None, 1, 1)
    want = REF.conv2d(as64(x), as64(w), None, 1, 1)
    scale = REF.conv2d(np.abs(as64(x)), np.abs(as64(w)), None, 1, 1)
    assert np.max(np.abs(got - want) / scale) < 5e-6  # measured 1.4-2.0e-6 at C = 256..1280


@pytest.mark.parametrize("xshape, o, path", [
    ((2, 320, 64, 64), 320, "winograd4"),  # SD's 64 px layers
    ((2, 1280, 32, 32), 1280, "winograd4"),
    ((1, 64, 256, 256), 64, "winograd4"),  # TAESD
    ((2, 1280, 16, 16), 1280, "winograd"),  # 16 px: F(2x2, 3x3) measured faster
    ((2, 32, 64, 64), 32, "im2col"),  # too few channels for Winograd (and taps)
])
def test_default_path_choice(xshape, o, path):
    assert cpu_conv.FORCE_PATH is None
    assert cpu_conv.choose_path(xshape, (o, xshape[1], 3, 3), 1, (1, 1, 1, 1)) == path
