"""Every op of the cuda backend vs the NumPy reference, under hypothesis. Without a GPU the
kernels and launch code run through the CPU emulator (small shapes: it is slow); on a GPU host
the same tests run on CuPy arrays."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff import kernels
from minriff.kernels.cuda import loader

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and not loader.gpu_available(),
                                reason="the cuda backend needs a GPU or g++ for the emulator")
R = kernels.ops("ref")
FEW = settings(max_examples=25)


@pytest.fixture(scope="module")
def F():
    return kernels.ops("cuda")


def arr(seed, *shape, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def close(F, got, want, tol=1e-5):
    got = F.to_host(got)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple)


@FEW
@given(shape=shapes, seed=st.integers(0, 2**16), op=st.sampled_from(["silu", "gelu", "quick_gelu"]))
def test_activations(F, shape, seed, op):
    x = arr(seed, *shape, scale=4)
    close(F, getattr(F, op)(F.asarray(x)), getattr(R, op)(x))


@FEW
@given(shape=shapes, seed=st.integers(0, 2**16), residual=st.booleans())
def test_relu(F, shape, seed, residual):
    x = arr(seed, *shape, scale=4)
    r = arr(seed + 1, *shape, scale=4) if residual else None
    got = F.relu(F.asarray(x)) if r is None else F.relu(F.asarray(x), F.asarray(r))
    np.testing.assert_array_equal(F.to_host(got), R.relu(x, r))  # one float32 add, then a max: exact


@FEW
@given(lead=st.lists(st.integers(1, 5), max_size=2).map(tuple), half=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_geglu(F, lead, half, seed):
    x = arr(seed, *lead, 2 * half, scale=3)
    close(F, F.geglu(F.asarray(x)), R.geglu(x))


@FEW
@given(lead=st.lists(st.integers(1, 5), max_size=2).map(tuple), n_in=st.integers(1, 20), n_out=st.integers(1, 20),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_linear(F, lead, n_in, n_out, bias, seed):
    x, w, b = arr(seed, *lead, n_in), arr(seed + 1, n_out, n_in), arr(seed + 2, n_out) if bias else None
    close(F, F.linear(F.asarray(x), F.asarray(w), None if b is None else F.asarray(b)), R.linear(x, w, b), 1e-4)


@FEW
@given(n=st.integers(1, 2), c=st.integers(1, 5), o=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9),
       k=st.sampled_from([(1, 1), (3, 3), (1, 3), (4, 2)]), stride=st.integers(1, 3),
       pad=st.one_of(st.integers(0, 2), st.tuples(*[st.integers(0, 2)] * 4)), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_conv2d(F, n, c, o, h, w, k, stride, pad, bias, seed):
    p = (pad,) * 4 if isinstance(pad, int) else pad
    if h + p[0] + p[1] < k[0] or w + p[2] + p[3] < k[1]:
        return
    x, wt, b = arr(seed, n, c, h, w), arr(seed + 1, o, c, *k), arr(seed + 2, o) if bias else None
    got = F.conv2d(F.asarray(x), F.asarray(wt), None if b is None else F.asarray(b), stride=stride, padding=pad)
    close(F, got, R.conv2d(x, wt, b, stride=stride, padding=pad), 1e-4)


@FEW
@given(n=st.integers(1, 2), groups=st.integers(1, 4), cpg=st.integers(1, 4),
       hw=st.tuples(st.integers(1, 7), st.integers(0, 7)),
       silu=st.booleans(), affine=st.booleans(), seed=st.integers(0, 2**16))
def test_group_norm(F, n, groups, cpg, hw, silu, affine, seed):
    C = groups * cpg
    spatial = tuple(d for d in hw if d)  # (N, C, H) or (N, C, H, W)
    x = arr(seed, n, C, *spatial, scale=3) + 2.0
    w, b = (arr(seed + 1, C), arr(seed + 2, C)) if affine else (None, None)
    dev = [None if a is None else F.asarray(a) for a in (w, b)]
    close(F, F.group_norm(F.asarray(x), groups, *dev, 1e-5, silu=silu),
          R.group_norm(x, groups, w, b, 1e-5, silu=silu), 1e-4)


def test_group_norm_large_group_uses_every_thread(F):
    x = arr(7, 1, 8, 33, 31, scale=2) + 1.0  # 4 * 1023 elements per group: several strides per thread
    w, b = arr(8, 8), arr(9, 8)
    close(F, F.group_norm(F.asarray(x), 2, F.asarray(w), F.asarray(b), 1e-6, silu=True),
          R.group_norm(x, 2, w, b, 1e-6, silu=True), 1e-4)


@FEW
@given(lead=st.lists(st.integers(1, 4), max_size=2).map(tuple), c=st.integers(1, 600), seed=st.integers(0, 2**16))
def test_layer_norm(F, lead, c, seed):
    x, w, b = arr(seed, *lead, c, scale=2) + 1.0, arr(seed + 1, c), arr(seed + 2, c)
    close(F, F.layer_norm(F.asarray(x), F.asarray(w), F.asarray(b), 1e-5), R.layer_norm(x, w, b, 1e-5), 1e-4)


@FEW
@given(shape=shapes, seed=st.integers(0, 2**16), data=st.data())
def test_softmax_any_axis(F, shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = arr(seed, *shape, scale=10)
    got = F.softmax(F.asarray(x), axis=axis)
    close(F, got, R.softmax(x, axis=axis))
    np.testing.assert_allclose(F.to_host(got).sum(axis=axis), 1.0, rtol=1e-5)


@pytest.mark.parametrize("c", [1000, 1025, 3000])  # warp per row up to 1024, then block per row
def test_softmax_wide_rows(F, c):
    x = arr(3, 3, c, scale=30)
    close(F, F.softmax(F.asarray(x)), R.softmax(x))


@FEW
@given(b=st.integers(1, 2), h=st.integers(1, 3), tq=st.integers(1, 40), tk=st.integers(1, 40),
       d=st.sampled_from([1, 8, 33, 40, 64]), causal=st.booleans(), scale=st.sampled_from([None, 0.3]),
       seed=st.integers(0, 2**16))
def test_attention(F, b, h, tq, tk, d, causal, scale, seed):
    q, k, v = arr(seed, b, h, tq, d), arr(seed + 1, b, h, tk, d), arr(seed + 2, b, h, tk, d)
    got = F.attention(F.asarray(q), F.asarray(k), F.asarray(v), scale=scale, causal=causal)
    close(F, got, R.attention(q, k, v, scale=scale, causal=causal), 1e-4)


@pytest.mark.parametrize("d", [80, 160, 512])  # SD head dims 40/80/160 and the VAE's single 512-wide head
def test_attention_large_head_dims_and_many_tiles(F, d):
    q, k, v = arr(d, 1, 2, 20, d), arr(d + 1, 1, 2, 70, d), arr(d + 2, 1, 2, 70, d)
    close(F, F.attention(F.asarray(q), F.asarray(k), F.asarray(v)), R.attention(q, k, v), 1e-4)


def test_attention_head_dim_limit_is_a_clear_error(F):
    q = np.zeros((1, 1, 2, 513), np.float32)
    with pytest.raises(ValueError, match="head dims up to 512"):
        F.attention(F.asarray(q), F.asarray(q), F.asarray(q))


def test_attention_tiles_fit_48k_shared_memory():
    from minriff.kernels.cuda import ops
    for d in range(1, 513):
        bk = ops.attention_tile(d)
        assert 1 <= bk <= ops.ATT_MAX_BK and ops.attention_shared_bytes(d, bk) <= 48 * 1024


@FEW
@given(n=st.integers(1, 2), c=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_upsample_nearest2x(F, n, c, h, w, seed):
    x = arr(seed, n, c, h, w)
    np.testing.assert_array_equal(F.to_host(F.upsample_nearest2x(F.asarray(x))), R.upsample_nearest2x(x))


@FEW
@given(t=st.lists(st.integers(0, 999), min_size=1, max_size=4), dim=st.integers(2, 70), flip=st.booleans(),
       shift=st.sampled_from([0.0, 1.0]))
def test_timestep_embedding(F, t, dim, flip, shift):
    if dim // 2 - shift <= 0:
        return
    t = np.array(t, np.float32)
    # same float32 arguments as ref; sin/cos of arguments up to 999 rad still differ by a few ulp
    # of the argument between libm and NumPy's float32 sin, hence 1e-5 absolute
    close(F, F.timestep_embedding(F.asarray(t), dim, flip_sin_to_cos=flip, shift=shift),
          R.timestep_embedding(t, dim, flip_sin_to_cos=flip, shift=shift), 1e-5)


@FEW
@given(shape=shapes, n=st.integers(1, 3), coeffs=st.lists(st.floats(-3, 3), min_size=3, max_size=3),
       seed=st.integers(0, 2**16))
def test_lincomb(F, shape, n, coeffs, seed):
    from minriff.kernels import cuda  # a backend extra (not a registry op): scheduler updates
    xs = [arr(seed + i, *shape) for i in range(n)]
    want = sum(np.float32(c) * x for c, x in zip(coeffs, xs))
    close(F, cuda.lincomb(coeffs[:n], [F.asarray(x) for x in xs]), want.astype(np.float32), 1e-5)


def test_ops_accept_float64_and_noncontiguous_input(F):
    x = arr(1, 4, 6).astype(np.float64).T  # (6, 4), Fortran order, float64
    close(F, F.silu(x), R.silu(x).astype(np.float32), 1e-6)
    close(F, F.softmax(x, axis=0), R.softmax(x, axis=0).astype(np.float32), 1e-6)


def test_shape_checks_run_in_front_of_the_kernels(F):
    with pytest.raises(ValueError, match="group_norm"):
        F.group_norm(np.zeros((1, 6, 2), np.float32), 4, None, None, 1e-5)


def _torch_cases():
    import json

    from support import FIXTURES
    path = FIXTURES / "kernels" / "torch_ops.npz"
    if not path.exists():
        return None, []
    data = np.load(path)
    return data, json.loads(str(data["index"]))


TORCH_DATA, TORCH_CASES = _torch_cases()


@pytest.mark.parametrize("case", TORCH_CASES, ids=[f"{i}-{c['op']}" for i, c in enumerate(TORCH_CASES)])
def test_op_matches_committed_torch_output(F, case):
    """The torch outputs committed by the kernel tests (tests/fixtures/kernels), on the cuda backend."""
    from support.kernel_cases import assert_close, error_scale

    op, kw = case["op"], dict(case["kwargs"])
    args = [TORCH_DATA[s["array"]] if "array" in s else s["value"] for s in case["args"]]
    if op == "conv2d" and isinstance(kw.get("padding"), list):
        kw["padding"] = tuple(kw["padding"])
    dev = [F.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    got = F.to_host(getattr(F, op)(*dev, **kw))
    assert_close(got, TORCH_DATA[case["out"]], error_scale(op, args, kw), what=f"cuda.{op}")  # cpu's tolerance


def test_results_do_not_depend_on_the_number_of_workers(F, monkeypatch):
    """Fixed-order reductions: bit-identical results whether blocks run on 1 or 3 OS threads."""
    if loader.gpu_available():
        pytest.skip("emulator worker count")
    x, w, b = arr(1, 2, 8, 9, 7, scale=3) + 1, arr(2, 8), arr(3, 8)
    q = arr(4, 1, 2, 30, 40)
    outs = []
    for workers in ("1", "3"):
        monkeypatch.setenv("MINRIFF_EMU_WORKERS", workers)
        outs.append([F.group_norm(x, 4, w, b, 1e-5, silu=True), F.layer_norm(x, w[:7].copy(), b[:7].copy(), 1e-5),
                     F.softmax(x, axis=1), F.attention(q, q, q)])
    for a, c in zip(*outs):
        np.testing.assert_array_equal(a, c)
