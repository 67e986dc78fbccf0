"""Classifier-free guidance's doubled latents: the UNet runs its layers before the first
cross-attention once for both halves (models/unet.py, _equal_halves). The result must be what each
half gives alone, and the sharing must really happen (seen from the ops' batch sizes)."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff import configs, kernels
from minriff.models.init import init_random
from minriff.models.unet import UNet2DConditionModel
from support import rel_err


def _tiny(seed, **over):
    cfg = configs.UNetConfig(**{**configs.TINY.unet.__dict__, **over})
    return init_random(UNet2DConditionModel(cfg), seed=seed), cfg


def _attention_batches(model, x, t, ctx) -> tuple[np.ndarray, list[int]]:
    seen = []
    real = kernels.ops().attention_unchecked

    def attention(q, k, v, scale=None, causal=False):
        seen.append(q.shape[0])
        return real(q, k, v, scale, causal)

    with kernels.override(kernels.backend(), "attention", attention):
        out = model(x, t, ctx)
    return out, seen


LAYOUTS = {
    "cross attention first": {},
    "plain first block": dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                              up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
    "only cross attention": dict(only_cross_attention=True),
    "linear projection": dict(use_linear_projection=True),
}


@settings(max_examples=8, deadline=None)
@given(layout=st.sampled_from(sorted(LAYOUTS)), seed=st.integers(0, 2**16), size=st.sampled_from([(8, 8), (8, 16)]),
       t=st.floats(0, 999))
def test_equal_halves_give_each_half_alone(layout, seed, size, t):
    model, cfg = _tiny(seed % 7, **LAYOUTS[layout])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, cfg.in_channels, *size), dtype=np.float32)
    ctx = rng.standard_normal((2, 5, cfg.cross_attention_dim), dtype=np.float32)
    both, batches = _attention_batches(model, np.concatenate([x, x]), t, ctx)
    for i in range(2):
        alone = model(x, t, ctx[i:i + 1])
        assert rel_err(both[i], alone[0]) <= 1e-5, (layout, i)
    first_has_self_attention = layout in ("cross attention first", "linear projection")
    assert (1 in batches) == first_has_self_attention  # the shared self-attention ran on one half
    assert batches.count(2) >= 1


def test_different_halves_are_not_shared():
    model, cfg = _tiny(0)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, cfg.in_channels, 8, 8), dtype=np.float32)
    x[1] = x[0]
    x[1, 0, 0, 0] += 1e-3  # one value apart
    ctx = rng.standard_normal((2, 5, cfg.cross_attention_dim), dtype=np.float32)
    both, batches = _attention_batches(model, x, 10.0, ctx)
    assert 1 not in batches
    assert rel_err(both[1], model(x[1:], 10.0, ctx[1:])[0]) <= 1e-5
    # equal latents at different timesteps are not shared either
    x[1] = x[0]
    _, batches = _attention_batches(model, x, np.array([10.0, 20.0], np.float32), ctx)
    assert 1 not in batches
