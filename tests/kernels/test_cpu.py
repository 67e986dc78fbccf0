"""cpu backend vs the NumPy reference (run in float64 on the same float32 inputs), over drawn
shapes, strides, paddings, groups and sequence lengths; 200 examples per op."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minriff.kernels.cpu import conv as cpu_conv
from minriff.kernels.cpu import winograd as cpu_winograd
from minriff.kernels.cpu import winograd4 as cpu_winograd4
from support.kernel_cases import as64, assert_close, f32, ops, tile_scale

REF, CPU = ops("ref"), ops("cpu")
EXAMPLES = settings(max_examples=200)
seeds = st.integers(0, 2**32 - 1)
lengths = st.sampled_from([1, 2, 3, 5, 7, 13, 16, 31, 64, 97, 128])  # 1, odd, prime, powers of 2
paddings = st.one_of(
    st.integers(0, 2),
    st.tuples(*[st.integers(0, 2)] * 4),
    st.just((0, 1, 0, 1)),
)


@contextlib.contextmanager
def conv_path(path, winograd_rows=False):
    """Force one of the conv paths where it applies (None: the normal choice by size and channel
    count); for both Winograds, work items by tile rows (winograd_rows) or by blocks of 4 output
    channels (these images are small: normally always channel blocks, of 128)."""
    saved = (cpu_conv.FORCE_PATH, cpu_winograd.SPLIT_TILES, cpu_winograd.CHANNEL_BLOCK, cpu_winograd4.BATCH_TILES,
             cpu_winograd4.CHANNEL_BLOCK)
    cpu_conv.FORCE_PATH = path
    cpu_winograd.SPLIT_TILES, cpu_winograd.CHANNEL_BLOCK = (1 if winograd_rows else 10**9), 4
    cpu_winograd4.BATCH_TILES, cpu_winograd4.CHANNEL_BLOCK = (0 if winograd_rows else 10**9), 4
    try:
        yield
    finally:
        (cpu_conv.FORCE_PATH, cpu_winograd.SPLIT_TILES, cpu_winograd.CHANNEL_BLOCK, cpu_winograd4.BATCH_TILES,
         cpu_winograd4.CHANNEL_BLOCK) = saved


@EXAMPLES
@given(seed=seeds, n=st.integers(1, 2), c=st.integers(1, 9), o=st.integers(1, 9),
       h=st.integers(1, 12), w=st.integers(1, 12), k=st.sampled_from([1, 3, 2, 5]),
       kw_same=st.booleans(), stride=st.sampled_from([1, 2]), padding=paddings, bias=st.booleans(),
       path=st.sampled_from((None,) + cpu_conv.PATHS), winograd_rows=st.booleans())
def test_conv2d_matches_ref(seed, n, c, o, h, w, k, kw_same, stride, padding, bias, path, winograd_rows):
    rng = np.random.default_rng(seed)
    kw = k if kw_same else 1 + (k % 3)
    pads = (padding,) * 4 if isinstance(padding, int) else padding
    h, w = max(h, k - pads[0] - pads[1]), max(w, kw - pads[2] - pads[3])
    x, wt, b = f32(rng, n, c, h, w), f32(rng, o, c, k, kw), (f32(rng, o) if bias else None)
    with conv_path(path, winograd_rows):
        got = CPU.conv2d(x, wt, b, stride=stride, padding=padding)
    want = REF.conv2d(as64(x), as64(wt), as64(b), stride=stride, padding=padding)
    scale = REF.conv2d(np.abs(as64(x)), np.abs(as64(wt)), None if b is None else np.abs(as64(b)), stride, padding)
    assert got.dtype == np.float32
    if path == "winograd4" and k == kw == 3 and stride == 1:  # errors follow the 4x4 tile (tile_scale)
        scale = tile_scale(scale)
    assert_close(got, want, scale, what=f"conv2d ({path or 'default'} path)")


@EXAMPLES
@given(seed=seeds, n=st.integers(1, 3), c=st.integers(1, 12), o=st.integers(1, 13), h=st.integers(1, 20),
       w=st.integers(1, 20), padding=paddings, bias=st.booleans(), winograd_rows=st.booleans())
def test_winograd_conv3x3_matches_ref(seed, n, c, o, h, w, padding, bias, winograd_rows):
    # the drawn convs above reach Winograd only when path, kernel size and stride all line up
    rng = np.random.default_rng(seed)
    pads = (padding,) * 4 if isinstance(padding, int) else padding
    h, w = max(h, 3 - pads[0] - pads[1]), max(w, 3 - pads[2] - pads[3])
    x, wt, b = f32(rng, n, c, h, w), f32(rng, o, c, 3, 3), (f32(rng, o) if bias else None)
    with conv_path("winograd", winograd_rows):
        got = CPU.conv2d(x, wt, b, stride=1, padding=padding)
    want = REF.conv2d(as64(x), as64(wt), as64(b), stride=1, padding=padding)
    scale = REF.conv2d(np.abs(as64(x)), np.abs(as64(wt)), None if b is None else np.abs(as64(b)), 1, padding)
    assert_close(got, want, scale, what=f"winograd by {'tile rows' if winograd_rows else 'channel blocks'}")


# (3 output channels keep the 64-channel cases on the taps path, as the VAE's conv_out: Winograd needs 4)
@pytest.mark.parametrize("shape,wshape,pad", [((2, 8, 50, 50), (3, 8, 1, 1), 0), ((2, 64, 70, 9), (3, 64, 3, 3), 1),
                                             ((1, 64, 9, 300), (3, 64, 3, 3), (0, 1, 2, 0)),
                                             ((1, 64, 37, 41), (6, 64, 3, 3), 1),  # Winograd at 64 channels (TAESD)
                                             ((2, 128, 41, 37), (5, 128, 3, 3), (1, 0, 2, 1)),  # Winograd by tile rows
                                             ((2, 128, 16, 17), (300, 128, 3, 3), 1),  # by channel blocks (3)
                                             ((2, 64, 8, 8), (512, 64, 3, 3), 1)])  # batch path, two GEMM halves
def test_conv2d_large_images_split_into_bands_match_ref(shape, wshape, pad):
    # bigger than one GEMM work item (cpu_conv.BAND_COLUMNS pixels): several bands per image
    rng = np.random.default_rng(1)
    x, w, b = f32(rng, *shape), f32(rng, *wshape), f32(rng, wshape[0])
    want = REF.conv2d(as64(x), as64(w), as64(b), 1, pad)
    scale = REF.conv2d(np.abs(as64(x)), np.abs(as64(w)), np.abs(as64(b)), 1, pad)
    assert_close(CPU.conv2d(x, w, b, 1, pad), want, scale, what="conv2d bands")


@EXAMPLES
@given(seed=seeds, lead=st.lists(st.integers(1, 5), min_size=0, max_size=2), fin=lengths,
       fout=lengths, bias=st.booleans())
def test_linear_matches_ref(seed, lead, fin, fout, bias):
    rng = np.random.default_rng(seed)
    x, w, b = f32(rng, *lead, fin), f32(rng, fout, fin), (f32(rng, fout) if bias else None)
    got = CPU.linear(x, w, b)
    want = REF.linear(as64(x), as64(w), as64(b))
    scale = REF.linear(np.abs(as64(x)), np.abs(as64(w)), None if b is None else np.abs(as64(b)))
    assert_close(got, want, scale, what="linear")


def _assert_linear_matches_ref(got, x, w, b, what):
    """got against the float64 reference linear on the same inputs (a float16 w read as float32)."""
    w64 = as64(np.asarray(w, np.float32))
    want = REF.linear(as64(x), w64, as64(b))
    scale = REF.linear(np.abs(as64(x)), np.abs(w64), None if b is None else np.abs(as64(b)))
    assert_close(got, want, scale, what=what)


@settings(max_examples=30)
@given(seed=seeds, band_rows=st.sampled_from([1, 3, 16]), rows=st.integers(4, 70), fin=st.integers(1, 40),
       fout=st.integers(1, 40), bias=st.booleans(), strided=st.booleans())
def test_linear_in_row_bands_matches_ref(seed, band_rows, rows, fin, fout, bias, strided):
    # the banded path (normally from 2048 rows: the UNet's 4096- and 1024-token layers) with small
    # bands, so partial last bands and single-row bands come up; strided: x is a non-contiguous view
    from minriff.kernels import cpu as kcpu

    rng = np.random.default_rng(seed)
    x = f32(rng, rows, fin + 3)[:, 1 : fin + 1] if strided else f32(rng, rows, fin)
    w, b = f32(rng, fout, fin), (f32(rng, fout) if bias else None)
    saved = kcpu.LINEAR_BAND_ROWS, kcpu.LONG_LINEAR_MIN_ROWS
    kcpu.LINEAR_BAND_ROWS, kcpu.LONG_LINEAR_MIN_ROWS = band_rows, 4
    try:
        got = CPU.linear(x, w, b)
    finally:
        kcpu.LINEAR_BAND_ROWS, kcpu.LONG_LINEAR_MIN_ROWS = saved
    _assert_linear_matches_ref(got, x, w, b, f"linear in bands of {band_rows}")


@settings(max_examples=30)
@given(seed=seeds, max_rows=st.sampled_from([16, 32, 48]), rows=st.integers(1, 40), fin=st.integers(1, 40),
       fout=st.integers(1, 200), bias=st.booleans(), half=st.booleans(), strided=st.booleans())
def test_linear_in_weight_blocks_matches_ref(seed, max_rows, rows, fin, fout, bias, half, strided):
    # the weight-block path (normally short inputs with a weight of >= 2^18 elements: the 16x16 and
    # 8x8 levels, the text encoder) with small blocks, so partial last blocks come up; each block's
    # output rows are set to the bias before its GEMM accumulates into them
    from minriff.kernels import cpu as kcpu
    from minriff.kernels.cpu import weightgemm

    rng = np.random.default_rng(seed)
    x = f32(rng, rows, fin + 3)[:, 1 : fin + 1] if strided else f32(rng, rows, fin)
    w, b = f32(rng, fout, fin), (f32(rng, fout) if bias else None)
    if half:
        w = w.astype(np.float16)
    saved = kcpu.WEIGHT_BLOCKS_MIN, weightgemm.MAX_BLOCK_ROWS
    kcpu.WEIGHT_BLOCKS_MIN, weightgemm.MAX_BLOCK_ROWS = 1, max_rows
    try:
        got = CPU.linear(x, w, b)
    finally:
        kcpu.WEIGHT_BLOCKS_MIN, weightgemm.MAX_BLOCK_ROWS = saved
    _assert_linear_matches_ref(got, x, w, b, f"linear in weight blocks of <= {max_rows} rows")


@settings(max_examples=30)
@given(seed=seeds, n=st.integers(1, 3), tokens=st.integers(2, 60), fin=st.integers(2, 40), fout=st.integers(1, 40),
       band_rows=st.sampled_from([1, 7, 16]), bias=st.booleans(), half=st.booleans(), cached=st.booleans())
def test_linear_on_channels_first_tokens_matches_ref(seed, n, tokens, fin, fout, band_rows, bias, half, cached):
    # a UNet transformer's input: the (0, 2, 1) view of a GroupNorm output (n, channels, tokens),
    # which the long path reads transposed inside the GEMM instead of copying
    from minriff import kernels
    from minriff.kernels import cpu as kcpu

    rng = np.random.default_rng(seed)
    x = f32(rng, n, fin, tokens).transpose(0, 2, 1)  # (n, tokens, fin), channels-first memory
    w, b = f32(rng, fout, fin), (f32(rng, fout) if bias else None)
    if half:
        w = w.astype(np.float16)
    taken = []
    real = kcpu._linear_channels_first
    with pytest.MonkeyPatch.context() as mp:
        for name, value in [("LINEAR_BAND_ROWS", band_rows), ("LONG_LINEAR_MIN_ROWS", 2),
                            ("CHANNELS_FIRST_MIN_TOKENS", 2),
                            ("_linear_channels_first", lambda *a: taken.append(1) or real(*a))]:
            mp.setattr(kcpu, name, value)
        with kernels.weight_cache(1 << 20 if cached else 0):
            got = CPU.linear(x, w, b)
    assert taken, "the channels-first path was not taken"
    _assert_linear_matches_ref(got, x, w, b, f"linear on channels-first tokens, bands of {band_rows}")


@settings(max_examples=30)
@given(seed=seeds, n=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(2, 24),
       o=st.integers(1, 24), bias=st.booleans(), half=st.booleans(), band=st.sampled_from([1, 5, 2048]))
def test_conv1x1_on_channels_last_memory_matches_ref(seed, n, h, w, c, o, bias, half, band):
    # a transformer's tokens (n, h·w, c) seen as an image for its 1x1 proj_out: (n, c, h, w) whose
    # memory is channels-last; the GEMMs read the pixels transposed in bands of `band` pixels
    rng = np.random.default_rng(seed)
    x = f32(rng, n, h, w, c).transpose(0, 3, 1, 2)
    wt, b = f32(rng, o, c, 1, 1), (f32(rng, o) if bias else None)
    if half:
        wt = wt.astype(np.float16)
    taken = []
    real = cpu_conv.conv1x1_channels_last
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu_conv, "BAND_COLUMNS", band)
        mp.setattr(cpu_conv, "conv1x1_channels_last", lambda *a: taken.append(1) or real(*a))
        got = CPU.conv2d(x, wt, b)
    assert taken, "the channels-last 1x1 path was not taken"
    w64 = as64(wt.astype(np.float32))
    want = REF.conv2d(as64(x), w64, as64(b))
    scale = REF.conv2d(np.abs(as64(x)), np.abs(w64), None if b is None else np.abs(as64(b)))
    assert_close(got, want, scale, what="1x1 conv on channels-last memory")


@settings(max_examples=30)
@given(seed=seeds, m=st.integers(1, 130), k=st.integers(1, 40), cols=st.integers(1, 300),
       max_rows=st.sampled_from([16, 64]))
def test_matmul_on_the_item_threads_matches_ref(seed, m, k, cols, max_rows):
    # weightgemm.a_b (im2col convs' GEMM): blocks of a's rows from 64 rows, else of b's columns
    from minriff.kernels.cpu import weightgemm

    rng = np.random.default_rng(seed)
    a, b = f32(rng, m, k), f32(rng, k, cols)
    c = np.full((m, cols + 3), np.nan, np.float32)[:, :cols]  # row-strided output; every element written
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(weightgemm, "MAX_BLOCK_ROWS", max_rows)
        weightgemm.a_b(a, b, c)
    assert_close(c, as64(a) @ as64(b), np.abs(as64(a)) @ np.abs(as64(b)), what="a_b")
    assert np.isnan(c.base[:, cols:]).all()


@given(rows=st.integers(1, 20000))
def test_weight_blocks_tile_the_rows_in_equal_shares(rows):
    from minriff.kernels.cpu import weightgemm

    blocks = weightgemm.blocks(rows)
    assert blocks[0][0] == 0 and blocks[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))  # contiguous, no gaps or overlaps
    sizes = [r1 - r0 for r0, r1 in blocks]
    assert all(s % 16 == 0 and s == sizes[0] for s in sizes[:-1]) and 0 < sizes[-1] <= sizes[0]
    assert sizes[0] <= max(16, weightgemm.MAX_BLOCK_ROWS)
    if rows >= 64 * weightgemm.BLOCK_COUNT_MULTIPLE:  # enough rows: 1, 2 or 4 threads get equal counts
        assert len(blocks) % weightgemm.BLOCK_COUNT_MULTIPLE == 0


@EXAMPLES
@given(seed=seeds, n=st.integers(1, 3), groups=st.sampled_from([1, 2, 3, 4, 8]),
       per_group=st.integers(1, 5), spatial=st.lists(st.integers(1, 9), min_size=0, max_size=2),
       affine=st.booleans(), silu=st.booleans(), eps=st.sampled_from([1e-6, 1e-5, 1e-3]),
       offset=st.floats(-3, 3), spread=st.floats(0.1, 10))
def test_group_norm_matches_ref(seed, n, groups, per_group, spatial, affine, silu, eps, offset, spread):
    rng = np.random.default_rng(seed)
    C = groups * per_group
    x = (f32(rng, n, C, *spatial) * np.float32(spread) + np.float32(offset)).astype(np.float32)
    wt, b = (f32(rng, C), f32(rng, C)) if affine else (None, None)
    got = CPU.group_norm(x, groups, wt, b, eps, silu=silu)
    want = REF.group_norm(as64(x), groups, as64(wt), as64(b), eps, silu=silu)
    assert_close(got, want, what="group_norm")


@EXAMPLES
@given(seed=seeds, lead=st.lists(st.integers(1, 6), min_size=0, max_size=2), c=lengths,
       affine=st.booleans(), eps=st.sampled_from([1e-6, 1e-5]), offset=st.floats(-3, 3))
def test_layer_norm_matches_ref(seed, lead, c, affine, eps, offset):
    rng = np.random.default_rng(seed)
    x = f32(rng, *lead, c) + np.float32(offset)
    wt, b = (f32(rng, c), f32(rng, c)) if affine else (None, None)
    got = CPU.layer_norm(x, wt, b, eps)
    want = REF.layer_norm(as64(x), as64(wt), as64(b), eps)
    assert_close(got, want, what="layer_norm")


@EXAMPLES
@given(seed=seeds, b=st.integers(1, 2), h=st.integers(1, 3), tq=lengths,
       tk=st.sampled_from([1, 2, 7, 77, 127, 513, 1031]),
       d=st.sampled_from([1, 3, 8, 40, 64]), causal=st.booleans(), scale=st.sampled_from([None, 0.3, 1.0]),
       growth=st.sampled_from([1.0, 1.0, 40.0]))
def test_attention_matches_ref(seed, b, h, tq, tk, d, causal, scale, growth):
    rng = np.random.default_rng(seed)
    q, k, v = f32(rng, b, h, tq, d), f32(rng, b, h, tk, d), f32(rng, b, h, tk, d)
    # growth > 1: later keys score far higher, so later key tiles raise the running max (the
    # kernel's lazy-max redo path) instead of the first tile holding it
    k = (k * np.linspace(1.0, growth, tk, dtype=np.float32)[:, None]).astype(np.float32)
    got = CPU.attention(q, k, v, scale=scale, causal=causal)
    want = REF.attention(as64(q), as64(k), as64(v), scale=scale, causal=causal)
    # The output is a convex combination of v rows, so errors scale with the weighted |v|; and
    # float32 scores carry an absolute rounding ~2^-24·Σ|q·k|·scale, which moves the weights by
    # that much relatively (large when growth makes scores reach hundreds).
    scale_v = REF.attention(as64(q), as64(k), np.abs(as64(v)), scale=scale, causal=causal)
    s = 1.0 / np.sqrt(d) if scale is None else scale
    score_abs = np.max(np.abs(as64(q)) @ np.swapaxes(np.abs(as64(k)), -1, -2), axis=-1, keepdims=True) * s
    assert_close(got, want, scale_v * (1.0 + 8 * 2.0**-24 * score_abs / 1e-5), what="attention")


@settings(max_examples=20)
@given(seed=seeds, b=st.integers(1, 2), h=st.integers(4, 12), tq=st.integers(1, 200), tk=st.sampled_from([1, 77, 300]),
       d=st.sampled_from([8, 40]), causal=st.booleans(), threads=st.sampled_from([1, 2]))
def test_attention_with_one_item_per_head_matches_ref(seed, b, h, tq, tk, d, causal, threads):
    # with >= 4 heads per thread every work item is one head, and lays out that head's operands
    # itself (the UNet's and text encoder's case); heads are strided views, as the models split them
    import numba

    rng = np.random.default_rng(seed)
    split = lambda a, t: a.reshape(b, t, h, d).transpose(0, 2, 1, 3)  # noqa: E731  (B, T, H·D) -> (B, H, T, D)
    q, k, v = split(f32(rng, b, tq, h * d), tq), split(f32(rng, b, tk, h * d), tk), split(f32(rng, b, tk, h * d), tk)
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        got = CPU.attention(q, k, v, causal=causal)
    finally:
        numba.set_num_threads(before)
    want = REF.attention(as64(q), as64(k), as64(v), causal=causal)
    assert_close(got, want, REF.attention(as64(q), as64(k), np.abs(as64(v)), causal=causal), what="attention per head")


@EXAMPLES
@given(seed=seeds, shape=st.lists(st.sampled_from([1, 2, 3, 5, 17, 64, 101]), min_size=1, max_size=3),
       data=st.data(), spread=st.floats(0.1, 30))
def test_softmax_matches_ref(seed, shape, data, spread):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = f32(np.random.default_rng(seed), *shape, scale=spread)
    assert_close(CPU.softmax(x, axis=axis), REF.softmax(as64(x), axis=axis), what="softmax")


@EXAMPLES
@given(seed=seeds, op=st.sampled_from(["silu", "gelu", "quick_gelu"]),
       shape=st.lists(st.integers(1, 40), min_size=0, max_size=3), spread=st.floats(0.1, 12))
def test_activations_match_ref(seed, op, shape, spread):
    x = f32(np.random.default_rng(seed), *shape, scale=spread)
    got = getattr(CPU, op)(x)
    assert got.shape == x.shape and got.dtype == np.float32
    assert_close(got, getattr(REF, op)(as64(x)), what=op)


@EXAMPLES
@given(seed=seeds, shape=st.lists(st.integers(1, 40), min_size=0, max_size=4), residual=st.booleans(),
       strided=st.booleans(), spread=st.floats(0.1, 12))
def test_relu_matches_ref(seed, shape, residual, strided, spread):
    rng = np.random.default_rng(seed)
    x = f32(rng, *shape, scale=spread)
    x = x.T if strided else x  # any layout: the op makes its inputs contiguous
    r = f32(rng, *x.shape, scale=spread) if residual else None
    got = CPU.relu(x, r)
    assert got.shape == x.shape and got.dtype == np.float32
    want = REF.relu(as64(x), as64(r))
    if r is not None:  # the float32 sum is rounded once before the max
        assert_close(got, want, np.abs(as64(x)) + np.abs(as64(r)), what="relu(x + residual)")
    else:
        np.testing.assert_array_equal(got, want)


def test_relu_keeps_nan_and_zeroes_negatives_exactly():
    x = np.array([np.nan, -np.inf, -1e-30, 0.0, 2.5, np.inf], np.float32)
    np.testing.assert_array_equal(CPU.relu(x), [np.nan, 0, 0, 0, 2.5, np.inf])
    np.testing.assert_array_equal(CPU.relu(x, -x), [np.nan, np.nan, 0, 0, 0, np.nan])


@EXAMPLES
@given(seed=seeds, lead=st.lists(st.integers(1, 7), min_size=0, max_size=2), half=lengths, spread=st.floats(0.1, 8))
def test_geglu_matches_ref(seed, lead, half, spread):
    x = f32(np.random.default_rng(seed), *lead, 2 * half, scale=spread)
    assert_close(CPU.geglu(x), REF.geglu(as64(x)), what="geglu")


@EXAMPLES
@given(seed=seeds, n=st.integers(1, 3), c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9))
def test_upsample_matches_ref(seed, n, c, h, w):
    x = f32(np.random.default_rng(seed), n, c, h, w)
    np.testing.assert_array_equal(CPU.upsample_nearest2x(x), REF.upsample_nearest2x(x))


@EXAMPLES
@given(t=st.lists(st.floats(0, 1000, width=32), min_size=1, max_size=5), dim=st.integers(2, 400),
       flip=st.booleans(), shift=st.sampled_from([0.0, 1.0]))
def test_timestep_embedding_matches_ref(t, dim, flip, shift):
    # The op is defined in float32 (diffusers computes it so); the reference runs the same
    # float32 frequencies, so only sin/cos rounding (~1 ulp) may differ.
    assume(dim // 2 != shift)  # rejected by the checks (division by zero)
    t = np.array(t, np.float32)
    got = CPU.timestep_embedding(t, dim, flip_sin_to_cos=flip, shift=shift)
    want = REF.timestep_embedding(t, dim, flip_sin_to_cos=flip, shift=shift)
    assert got.shape == (t.size, dim) and got.dtype == np.float32
    assert_close(got, want, what="timestep_embedding")


def test_gelu_on_a_dense_grid_matches_scipy_erfc():
    # cpu gelu uses a vectorisable erfc (cpu_math.erfcf); check it everywhere, tails included
    from scipy.special import erfc

    x = np.linspace(-20, 20, 400_001, dtype=np.float32)
    want = 0.5 * as64(x) * erfc(-as64(x) / np.sqrt(2.0))
    assert_close(CPU.gelu(x), want, what="gelu grid")
    assert_close(CPU.quick_gelu(x), as64(x) / (1 + np.exp(-1.702 * as64(x))), what="quick_gelu grid")
    assert_close(CPU.silu(x), as64(x) / (1 + np.exp(-as64(x))), what="silu grid")
