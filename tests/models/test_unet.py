"""UNet2DConditionModel: committed diffusers fixtures (no torch needed), invariants, input errors,
and one full-size SD 1.5 step on random weights."""
from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff import configs, kernels
from minriff.errors import ConfigError, InputError, WeightsError
from minriff.models import nn
from minriff.models.init import init_random
from minriff.models.unet import UNet2DConditionModel
from support.model_cases import check_unet, fixture_model, mm


@pytest.mark.parametrize("name", sorted(mm.UNET_CASES))
def test_matches_diffusers_fixture(name):
    check_unet(*fixture_model("unet", name))


def _tiny(seed=0, dtype=np.float32, **over):
    cfg = configs.UNetConfig(**{**configs.TINY.unet.__dict__, **over})
    model = init_random(UNet2DConditionModel(cfg), seed=seed)
    if dtype != np.float32:
        model.apply_to_parameters(lambda p: p.astype(dtype))
    return model, cfg


@settings(max_examples=6)
@given(h=st.integers(1, 10), w=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_batch_items_are_independent(h, w, seed):
    """Any latent size (non-square, odd ones too: TINY's padding-1 downsampler takes any) runs,
    keeps its shape, and each batch item's output depends on that item only."""
    model, cfg = _tiny()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 4, h, w), dtype=np.float32)
    ctx = rng.standard_normal((2, 3, cfg.cross_attention_dim), dtype=np.float32)
    t = np.array([3.0, 700.0], dtype=np.float32)
    both = model(x, t, ctx)
    assert both.shape == x.shape and np.isfinite(both).all()
    for i in range(2):
        alone = model(x[i:i + 1], t[i:i + 1], ctx[i:i + 1])
        assert mm.rel_err(alone[0], both[i]) <= 1e-5


def test_scalar_timestep_broadcasts():
    model, cfg = _tiny()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 8), dtype=np.float32)
    ctx = rng.standard_normal((2, 5, cfg.cross_attention_dim), dtype=np.float32)
    np.testing.assert_array_equal(model(x, 250, ctx), model(x, np.array([250.0, 250.0]), ctx))


def test_current_backend_matches_float64_reference():
    """The model on the current (fast) backend in float32 vs the same model on `ref` in float64."""
    model, cfg = _tiny(seed=3)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 8, 16), dtype=np.float32)
    ctx = rng.standard_normal((1, 6, cfg.cross_attention_dim), dtype=np.float32)
    got = model(x, 400, ctx)
    model64, _ = _tiny(seed=3, dtype=np.float64)
    old = kernels.backend()
    try:
        kernels.backend("ref")
        want = model64(x.astype(np.float64), 400, ctx.astype(np.float64))
    finally:
        kernels.backend(old)
    assert want.dtype == np.float64
    assert mm.rel_err(got, want) <= 1e-5


@pytest.mark.parametrize("x_shape, t, ctx_shape, match", [
    ((1, 4, 0, 8), 1, (1, 3, 16), "latent size 0×8 is too small"),
    ((1, 3, 8, 8), 1, (1, 3, 16), r"\(B, 4, h, w\)"),
    ((4, 8, 8), 1, (1, 3, 16), r"\(B, 4, h, w\)"),
    ((2, 4, 8, 8), [1, 2, 3], (2, 3, 16), "3 timesteps for a batch of 2"),
    ((2, 4, 8, 8), 1, (2, 3, 15), "text states"),
    ((2, 4, 8, 8), 1, (1, 3, 16), "text states"),
])
def test_bad_inputs_raise_input_error(x_shape, t, ctx_shape, match):
    model, _ = _tiny()
    with pytest.raises(InputError, match=match):
        model(np.zeros(x_shape, np.float32), t, np.zeros(ctx_shape, np.float32))


def test_a_latent_too_small_for_the_downsamplers_is_named():
    """Padding 0 (diffusers' one-sided pad): 5 -> 2 -> 1, and the third downsampler's 3x3 kernel
    would not fit in 1 + 1. Parameters stay unallocated: the check comes first."""
    model = UNet2DConditionModel(configs.UNetConfig(**{**configs.SD15.unet.__dict__, "downsample_padding": 0}))
    with pytest.raises(InputError, match=r"60×5 is too small for its 3 downsamplers \(padding 0\)"):
        model(np.zeros((1, 4, 60, 5), np.float32), 1, np.zeros((1, 77, 768), np.float32))
    sd = UNet2DConditionModel(configs.SD15.unet)  # padding 1 fits any size, as in diffusers
    assert sd._fits(1) and sd._fits(5) and not sd._fits(0)


def test_heads_must_divide_channels():
    with pytest.raises(ConfigError, match="attention heads"):
        UNet2DConditionModel(configs.UNetConfig(**{**configs.TINY.unet.__dict__, "attention_head_dim": 3}))


def test_sd15_keys_and_parameter_count():
    """Key names/shapes of the SD 1.5 UNet: 859.5 M parameters (diffusers reports 859,520,964)."""
    shapes = UNet2DConditionModel(configs.SD15.unet).parameter_shapes()
    assert sum(int(np.prod(s)) for s in shapes.values()) == 859_520_964
    assert shapes["down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert shapes["down_blocks.0.attentions.0.proj_in.weight"] == (320, 320, 1, 1)
    assert shapes["up_blocks.1.resnets.2.conv_shortcut.weight"] == (1280, 1920, 1, 1)
    assert shapes["up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj.weight"] == (2560, 320)
    assert shapes["mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.bias"] == (1280,)
    assert "down_blocks.3.downsamplers.0.conv.weight" not in shapes
    assert "up_blocks.3.upsamplers.0.conv.weight" not in shapes


def test_fixture_weights_with_a_missing_key_are_refused():
    config, weights, _ = mm.load_case("unet", "odd2")
    weights.pop("mid_block.attentions.0.proj_in.weight")
    with pytest.raises(WeightsError, match="missing: mid_block.attentions.0.proj_in.weight"):
        nn.load(UNet2DConditionModel(configs.UNetConfig.from_dict(config)), weights, what="UNet")


def test_full_size_sd15_step_batch2_64x64():  # 50-58 s on the shared 2-core machine, incl. ~10 s random init
    """Full SD 1.5 shapes with random weights: one step at batch 2 on 64×64 latents."""
    t0 = time.perf_counter()
    model = init_random(UNet2DConditionModel(configs.SD15.unet), seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 64, 64), dtype=np.float32)
    ctx = rng.standard_normal((2, 77, 768), dtype=np.float32)
    out = model(x, np.array([981, 981]), ctx)
    print(f"full-size UNet step incl. random init: {time.perf_counter() - t0:.1f} s")
    assert out.shape == (2, 4, 64, 64) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.std() > 0


@settings(max_examples=60)
@given(n_out=st.integers(1, 300), c=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_resize_nearest_to_a_skip_size_is_twice_then_cropped(n_out, c, seed):
    """A stride-2 pad-1 downsampler turns n into ceil(n / 2); nearest interpolation from there back
    to n picks floor(i / 2), i.e. x2 then the first n. Shape and values, both axes at once."""
    from minriff.models.blocks import resize_nearest

    n_in = -(-n_out // 2)
    x = np.random.default_rng(seed).standard_normal((1, c, n_in, n_in + 1), dtype=np.float32)
    got = resize_nearest(x, (n_out, n_out + 1 + (n_out % 2)))
    want = x.repeat(2, axis=2).repeat(2, axis=3)[:, :, :n_out, :n_out + 1 + (n_out % 2)]
    assert got.shape == want.shape and np.array_equal(got, want)
