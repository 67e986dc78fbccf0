"""float16-held weights in the kernels: the widening itself (every one of the 65536 half values),
and each op that takes weights giving, with a float16 weight, what it gives with that weight
widened to float32 beforehand — through every conv path and every linear regime of the cpu
backend, and on the ref backend."""
from __future__ import annotations

import numpy as np
import pytest

from minriff import kernels
from minriff.kernels.cpu import conv as cpu_conv
from minriff.kernels.cpu.half import as_float32, bits_or_float32
from support import rel_err


def test_widening_matches_numpy_for_every_half_value():
    bits = np.arange(1 << 16, dtype=np.uint16)
    want = bits.view(np.float16).astype(np.float32)
    got = as_float32(bits.view(np.float16))
    assert got.dtype == np.float32 and got.shape == want.shape
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))  # signed zeros too


def test_widening_into_a_workspace_buffer_and_non_contiguous_input():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 10)).astype(np.float16)[:, ::2]  # a strided view
    got = as_float32(w, "test_half")
    assert got.shape == (6, 5) and np.array_equal(got, w.astype(np.float32))
    assert bits_or_float32(w).dtype == np.uint16 and bits_or_float32(w.astype(np.float32)).dtype == np.float32


def _half(rng, *shape, scale=0.2):
    return (rng.standard_normal(shape) * scale).astype(np.float16)


# (x shape, w shape, stride, padding) for each conv path; one "batch" case with >= 512 output
# channels (weight blocks, weightgemm.w_x) and one Winograd case big enough for the tile-band items
CONV_CASES = {
    "1x1": ((2, 8, 6, 5), (12, 8, 1, 1), 1, 0),
    "batch": ((2, 8, 4, 4), (16, 8, 3, 3), 1, 1),
    "batch-blocks": ((1, 16, 4, 4), (520, 16, 3, 3), 1, 1),
    "winograd": ((1, 128, 16, 16), (8, 128, 3, 3), 1, 1),
    "winograd4": ((1, 64, 32, 32), (8, 64, 3, 3), 1, 1),
    "taps": ((1, 64, 7, 9), (5, 64, 3, 3), 1, 1),
    "im2col": ((2, 3, 9, 8), (4, 3, 3, 3), 2, 1),
}


@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_conv2d_half_weights_equal_widened_weights(name, monkeypatch):
    xs, ws, stride, padding = CONV_CASES[name]
    path = name.split("-")[0]
    monkeypatch.setattr(cpu_conv, "FORCE_PATH", path)
    pads = (padding,) * 4
    assert cpu_conv.choose_path(xs, ws, stride, pads) == path
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal(xs, dtype=np.float32)
    w, b = _half(rng, *ws), _half(rng, ws[0])
    F = kernels.ops("cpu")
    got = F.conv2d(x, w, b, stride=stride, padding=padding)
    want = F.conv2d(x, w.astype(np.float32), b.astype(np.float32), stride=stride, padding=padding)
    assert got.dtype == np.float32
    assert np.array_equal(got, want)
    ref = kernels.ops("ref").conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), stride=stride,
                                    padding=padding)
    assert rel_err(got, ref) <= 1e-5


# rows x (out, in): a plain GEMM, a big weight on few rows (weight blocks), many rows (bands)
LINEAR_CASES = {"small": (5, (24, 16)), "weight-blocks": (7, (520, 512)), "bands": (2100, (40, 24))}


@pytest.mark.parametrize("name", sorted(LINEAR_CASES))
def test_linear_half_weights_equal_widened_weights(name):
    rows, (O, K) = LINEAR_CASES[name]
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((1, rows, K), dtype=np.float32)
    w, b = _half(rng, O, K), _half(rng, O)
    F = kernels.ops("cpu")
    got = F.linear(x, w, b)
    assert got.dtype == np.float32 and got.shape == (1, rows, O)
    assert np.array_equal(got, F.linear(x, w.astype(np.float32), b.astype(np.float32)))
    assert rel_err(got, x.astype(np.float64) @ w.astype(np.float64).T + b) <= 1e-5


@pytest.mark.parametrize("backend", ["cpu", "ref"])
def test_norms_take_half_parameters(backend):
    rng = np.random.default_rng(4)
    F = kernels.ops(backend)
    x = rng.standard_normal((2, 8, 3, 3), dtype=np.float32)
    g, b = (1 + _half(rng, 8)), _half(rng, 8)
    got = F.group_norm(x, 4, g, b, 1e-5)
    assert got.dtype == np.float32
    assert rel_err(got, F.group_norm(x, 4, g.astype(np.float32), b.astype(np.float32), 1e-5)) <= 1e-6
    t = rng.standard_normal((2, 5, 8), dtype=np.float32)
    got = F.layer_norm(t, g, b, 1e-5)
    assert got.dtype == np.float32
    assert rel_err(got, F.layer_norm(t, g.astype(np.float32), b.astype(np.float32), 1e-5)) <= 1e-6


def test_ref_backend_takes_half_weights():
    rng = np.random.default_rng(5)
    F = kernels.ops("ref")
    x = rng.standard_normal((1, 4, 5, 5), dtype=np.float32)
    w, b = _half(rng, 6, 4, 3, 3), _half(rng, 6)
    got = F.conv2d(x, w, b, padding=1)
    assert got.dtype == np.float32
    assert rel_err(got, F.conv2d(x, w.astype(np.float32), b.astype(np.float32), padding=1)) <= 1e-6
    t = rng.standard_normal((3, 4), dtype=np.float32)
    lw = _half(rng, 2, 4)
    got = F.linear(t, lw, None)
    assert got.dtype == np.float32 and rel_err(got, F.linear(t, lw.astype(np.float32), None)) <= 1e-6
