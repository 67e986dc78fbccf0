"""The BLAS bridge (kernels/cpu_blas.py) through both interfaces it supports: numpy's CBLAS
(row-major, 64-bit ints; the one used when numpy bundles OpenBLAS) and scipy's Fortran sgemm (the
fallback, never taken on a machine with pip's numpy unless forced, as here). Also the exp2f the
attention kernel depends on, checked on a dense grid under the fastmath flags it is compiled with."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from minriff.kernels.cpu import blas as cpu_blas
from minriff.kernels.cpu.vecmath import FMA_FLAGS, exp2f, expf
from support.kernel_cases import as64, assert_close, f32, ops

INTERFACES = [pytest.param(1, id="fortran")]
if cpu_blas.SGEMM_KIND == 0:
    INTERFACES.insert(0, pytest.param(0, id="cblas"))


def _addr(kind):
    return cpu_blas.SGEMM_ADDR if kind == cpu_blas.SGEMM_KIND else cpu_blas.FORTRAN_SGEMM_ADDR


@njit
def _sgemm_views(fn, kind, a, b, c, beta):
    """c = a @ b + beta c on (possibly row-strided) 2-D views, the way the Numba kernels call it."""
    cpu_blas.sgemm(fn, kind, a.shape[0], c.shape[1], a.shape[1], a.ctypes.data, a.strides[0] // 4,
                   b.ctypes.data, b.strides[0] // 4, np.float32(beta), c.ctypes.data, c.strides[0] // 4)


def _strided(rng, rows, cols, pad):
    """rows x cols float32 view with unit column stride and row stride cols + pad."""
    return f32(rng, rows, cols + pad)[:, :cols]


@pytest.mark.parametrize("kind", INTERFACES)
@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 70), n=st.integers(1, 70), k=st.integers(1, 70),
       pads=st.tuples(*[st.sampled_from([0, 0, 3])] * 3), beta=st.sampled_from([0.0, 1.0, 0.5]))
def test_sgemm_from_numba_matches_numpy(kind, seed, m, n, k, pads, beta):
    rng = np.random.default_rng(seed)
    a, b, c = _strided(rng, m, k, pads[0]), _strided(rng, k, n, pads[1]), _strided(rng, m, n, pads[2])
    want = as64(a) @ as64(b) + beta * as64(c)
    parent = c.base.copy()
    _sgemm_views(_addr(kind), kind, a, b, c, beta)
    assert_close(c, want, as64(np.abs(a)) @ as64(np.abs(b)) + abs(beta) * np.abs(as64(parent[:, :n])), what="sgemm")
    np.testing.assert_array_equal(c.base[:, n:], parent[:, n:])  # the row padding is never written


@pytest.mark.parametrize("kind", INTERFACES)
def test_gemm_into_and_attention_through_each_interface(kind, monkeypatch):
    addr = _addr(kind)
    monkeypatch.setattr(cpu_blas, "SGEMM_KIND", kind)
    monkeypatch.setattr(cpu_blas, "SGEMM_ADDR", addr)
    rng = np.random.default_rng(1)
    a, b, c = _strided(rng, 9, 5, 2), _strided(rng, 5, 7, 0), _strided(rng, 9, 7, 1)
    want = as64(a) @ as64(b) + as64(c)
    cpu_blas.gemm_into(a, b, c, beta=1.0)
    assert_close(c, want, as64(np.abs(a)) @ as64(np.abs(b)) + np.abs(want), what="gemm_into")
    bt = _strided(rng, 7, 5, 3)  # (N, K): a linear layer's weight, used transposed
    c2 = _strided(rng, 9, 7, 2)
    want = as64(a) @ as64(bt).T + 0.5 * as64(c2)
    cpu_blas.gemm_into(a, bt, c2, beta=0.5, trans_b=True)
    assert_close(c2, want, as64(np.abs(a)) @ as64(np.abs(bt)).T + np.abs(want), what="gemm_into trans_b")
    with pytest.raises(ValueError, match="do not agree"):
        cpu_blas.gemm_into(a, bt.T, c2, trans_b=True)
    CPU, REF = ops("cpu"), ops("ref")
    q, kk, v = f32(rng, 1, 2, 300, 40), f32(rng, 1, 2, 600, 40), f32(rng, 1, 2, 600, 40)
    scale_v = REF.attention(as64(q), as64(kk), np.abs(as64(v)))
    assert_close(CPU.attention(q, kk, v), REF.attention(as64(q), as64(kk), as64(v)), scale_v, what="attention")


@pytest.mark.parametrize("kind", INTERFACES)
@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 40), n=st.integers(1, 40), k=st.integers(1, 40),
       trans=st.tuples(st.booleans(), st.booleans()), pads=st.tuples(*[st.sampled_from([0, 2])] * 3),
       beta=st.sampled_from([0.0, 1.0]))
def test_gemm_into_with_either_operand_transposed_matches_numpy(kind, seed, m, n, k, trans, pads, beta):
    trans_a, trans_b = trans
    rng = np.random.default_rng(seed)
    a = _strided(rng, k, m, pads[0]) if trans_a else _strided(rng, m, k, pads[0])  # stored as given to gemm_into
    b = _strided(rng, n, k, pads[1]) if trans_b else _strided(rng, k, n, pads[1])
    c = _strided(rng, m, n, pads[2])
    a64, b64 = (as64(a).T if trans_a else as64(a)), (as64(b).T if trans_b else as64(b))
    want = a64 @ b64 + beta * as64(c)
    bound = np.abs(a64) @ np.abs(b64) + np.abs(want)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu_blas, "SGEMM_KIND", kind)
        cpu_blas.gemm_into(a, b, c, beta=beta, trans_a=trans_a, trans_b=trans_b)
    assert_close(c, want, bound, what=f"gemm_into trans_a={trans_a} trans_b={trans_b}")


FLAGS = {"plain": set(), "fma": FMA_FLAGS, "reassoc": FMA_FLAGS | {"reassoc"}}


def _on_grid(fn, flags, x):
    """fn applied to every element of x by a Numba loop compiled with FLAGS[flags]."""
    @njit(fastmath=FLAGS[flags], error_model="numpy")
    def run(x, out):
        for j in range(x.size):
            out[j] = fn(x[j])

    got = np.empty_like(x)
    run(x, got)
    return got


def _assert_relative_error_below(bound, x, got, want):
    rel = np.abs(got / want - 1)
    assert rel.max() < bound, f"max relative error {rel.max():.2e} at x = {x[rel.argmax()]}"


@pytest.mark.parametrize("flags", list(FLAGS), ids=list(FLAGS))
def test_exp2f_on_a_dense_grid(flags):
    x = np.concatenate([np.linspace(-140, 140, 1_000_001, dtype=np.float32),
                        np.array([-np.inf, -127.0, -126.6, -126.4, 0.5, -0.5, 127.5], np.float32)])
    got, want = _on_grid(exp2f, flags, x), np.exp2(as64(x))
    normal = (x > -126.4) & (x < 127.49)
    _assert_relative_error_below(3e-7, x[normal], got[normal], want[normal])
    assert np.all(got[x <= -126.6] == 0)  # flushed to 0 below the normal range, -inf included
    assert np.all(got[(x > -126.6) & (x <= -126.4)] >= 0)
    assert np.all(np.isinf(got[x > 127.5]))  # documented: n = 128 has no finite float32 exponent


@pytest.mark.parametrize("flags", ["plain", "fma"])  # reassoc may merge the two-part Cody-Waite reduction
def test_expf_on_a_dense_grid(flags):
    x = np.concatenate([np.linspace(-100, 100, 1_000_001, dtype=np.float32),
                        np.array([-np.inf, -88.0, -87.5, 0.0, 88.0, np.inf], np.float32)])
    got, want = _on_grid(expf, flags, x), np.exp(as64(x))
    normal = (x > -87.3) & (x < 88.37)
    _assert_relative_error_below(3e-7, x[normal], got[normal], want[normal])
    assert np.all(got[x <= -88.0] == 0)
    tiny = (x > -88.0) & (x <= -87.3)  # tiny normals: right to 1e-6 relative, or flushed to 0
    assert np.all((got[tiny] == 0) | (np.abs(got[tiny] / want[tiny] - 1) < 1e-6))
    assert np.all(np.isinf(got[x > 88.4]))  # n = 128 from 88.38 up, as for exp2f


@pytest.mark.skipif(cpu_blas.blas_threads() is None, reason="numpy's BLAS is not its bundled OpenBLAS")
def test_ops_leave_numpys_blas_thread_count_alone():
    # Regression: OpenBLAS's "set_num_threads_local" is global in numpy's build, and per-worker
    # save/restore left numpy's matmul single-threaded after the first conv.
    import threading

    CPU = ops("cpu")
    rng = np.random.default_rng(0)
    before = cpu_blas.blas_threads()
    x, w = f32(rng, 2, 64, 20, 20), f32(rng, 32, 64, 3, 3)
    q = f32(rng, 1, 2, 200, 40)

    def use():
        for _ in range(3):
            CPU.conv2d(x, w, None, 1, 1)
            CPU.conv2d(x, w[:, :, :1, :1])
            CPU.linear(f32(rng, 300, 64), f32(rng, 48, 64))
            CPU.attention(q, q, q)

    use()
    assert cpu_blas.blas_threads() == before
    threads = [threading.Thread(target=use) for _ in range(3)]  # concurrent callers
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cpu_blas.blas_threads() == before
    with cpu_blas.single_threaded_blas():
        assert cpu_blas.blas_threads() == 1
        with cpu_blas.single_threaded_blas():
            assert cpu_blas.blas_threads() == 1
        assert cpu_blas.blas_threads() == 1
    assert cpu_blas.blas_threads() == before
