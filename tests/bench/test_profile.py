"""minriff.bench.profile: every op call of a real model timed and counted, flops from the shapes,
and the backend left exactly as it was."""
from __future__ import annotations

import numpy as np

from minriff import kernels
from minriff.bench.profile import op_profile
from minriff.models import random_models


def test_profile_counts_every_op_call_and_restores_the_backend():
    F = kernels.ops("cpu")
    before = {op: getattr(kernels.ops("cpu"), op + "_unchecked") for op in kernels.OP_NAMES}
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 9, 7), dtype=np.float32), rng.standard_normal((5, 3, 3, 3), dtype=np.float32)
    xl, wl = rng.standard_normal((4, 6, 8), dtype=np.float32), rng.standard_normal((10, 8), dtype=np.float32)
    with op_profile("cpu") as prof:
        G = kernels.ops("cpu")
        for _ in range(3):
            G.conv2d(x, w, None, 1, 1)
        G.linear(xl, wl)
        G.silu(x)
    rows = {(op, shapes): (n, g) for op, shapes, n, s, g in prof.by_shape(10)}
    conv_n, conv_rate = rows[("conv2d", "(2,3,9,7)x(5,3,3,3)")]
    assert conv_n == 3 and conv_rate > 0
    assert rows[("linear", "(4,6,8)x(10,8)")][0] == 1 and rows[("silu", "(2,3,9,7)")] == (1, 0.0)
    calls = {op: n for op, n, s in prof.by_op()}
    assert calls == {"conv2d": 3, "linear": 1, "silu": 1}
    # flops: conv 2·N·O·Ho·Wo·C·9, linear 2·rows·out·in (the GFLOP/s column divides these by the time)
    assert prof.calls[("conv2d", "(2,3,9,7)x(5,3,3,3)")][2] == 3 * 2 * 2 * 5 * 9 * 7 * 3 * 9
    assert prof.calls[("linear", "(4,6,8)x(10,8)")][2] == 2 * 24 * 10 * 8
    assert "conv2d" in prof.table() and "GFLOP/s" in prof.table()
    after = {op: getattr(kernels.ops("cpu"), op + "_unchecked") for op in kernels.OP_NAMES}
    assert after == before and F.conv2d is not None


def test_profile_of_a_model_step_sees_its_ops():
    models = random_models("tiny")
    unet, cfg = models["unet"], models["config"].unet
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, cfg.in_channels, 8, 8), dtype=np.float32)
    ctx = rng.standard_normal((2, 77, cfg.cross_attention_dim), dtype=np.float32)
    with op_profile() as prof:
        out = unet(x, np.array([10.0, 10.0], np.float32), ctx)
    calls = {op: n for op, n, s in prof.by_op()}
    assert out.shape == x.shape
    assert {"conv2d", "linear", "attention", "group_norm", "layer_norm", "timestep_embedding"} <= set(calls)
    assert prof.total() > 0
