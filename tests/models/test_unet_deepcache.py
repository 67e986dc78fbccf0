"""DeepCache in the UNet: `deep_cache_full` / `deep_cache_step` on the SD 1.5-shaped tiny UNet "sd4"
(4 blocks, layers_per_block 2, so branches 0..11 as in SD 1.5).

- the full step is the plain forward, bit for bit, and a cached step on its own inputs gives it back;
- a cached step runs exactly the modules of reference/fast_sampling_lora_controlnet.md §3.2's table
  (branches 0-3, written out here by hand) and enters the feature named there;
- against DeepCache's `DeepCacheSDHelper`: the committed run (tests/fixtures/deepcache/unet.npz, made
  by tests/fixtures/make_deepcache.py) in the default suite, live under `pytest -m oracle`.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from minriff import configs
from minriff.errors import InputError
from minriff.models import blocks
from minriff.models import unet as unet_mod
from minriff.models.init import init_random
from support import fixture_script, oracle, rel_err
from support.model_cases import fixture_model

make = fixture_script("make_deepcache")
pytestmark = pytest.mark.usefixtures("serial_numba")
TOL = 2e-6  # helper vs minriff, float32 (measured 5.3e-7 at most)


@pytest.fixture(scope="module")
def sd4():
    model, arrays, _ = fixture_model("unet", "sd4")
    return model, arrays["x"], arrays["t"], arrays["context"]


def test_sd15_has_twelve_branches(sd4):
    assert unet_mod.UNet2DConditionModel(configs.SD15.unet).deep_cache_branches == 12
    assert sd4[0].deep_cache_branches == 12


@pytest.mark.parametrize("branch", range(12))
def test_full_step_is_the_plain_forward_and_a_cached_step_on_its_inputs_gives_it_back(sd4, branch):
    model, x, t, ctx = sd4
    plain = model(x, t, ctx)
    eps, feature = model.deep_cache_full(x, t, ctx, branch)
    np.testing.assert_array_equal(eps, plain)
    np.testing.assert_array_equal(model.deep_cache_step(x, t, ctx, branch, feature), plain)


@pytest.mark.parametrize("branch", [0, 2, 3, 7, 11])
def test_the_same_at_latent_sizes_that_are_not_multiples_of_the_downscale(sd4, branch):
    """9 x 13 latents: the skips are 9x13, 5x7, 3x4, 2x2, so the features are too (not h/s, w/s)."""
    model, x, t, ctx = sd4
    x = np.ascontiguousarray(np.concatenate([x, x], axis=3)[:, :, :9, :13])
    plain = model(x, t, ctx)
    eps, feature = model.deep_cache_full(x, t, ctx, branch)
    np.testing.assert_array_equal(eps, plain)
    np.testing.assert_array_equal(model.deep_cache_step(x, t, ctx, branch, feature), plain)


# ---- what a cached step computes ------------------------------------------------------------------
RECORDED = (blocks.ResnetBlock2D, unet_mod.Transformer2DModel, blocks.Downsample2D, blocks.Upsample2D,
            unet_mod.MidBlock, unet_mod.TimestepEmbedding)


def _named(module, prefix=""):
    yield prefix.rstrip("."), module
    for name, child in module.named_children():
        yield from _named(child, f"{prefix}{name}.")


@contextlib.contextmanager
def recording(model):
    """Calls of the UNet's layers (resnets, transformers, down/upsamplers, mid block, time
    embedding, conv_in, the head), by diffusers module name, with each output."""
    names = {id(m): n for n, m in _named(model)}
    watched = {"conv_in", "conv_norm_out", "conv_out"}
    calls = {}
    originals = {}
    mp = pytest.MonkeyPatch()

    def spy(cls):
        original = originals.setdefault(cls, cls.__call__)

        def call(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            name = names.get(id(self))
            if name is not None and (not isinstance(self, (unet_mod.Conv2d, unet_mod.GroupNorm)) or name in watched):
                calls[name] = out.copy()
            return out
        mp.setattr(cls, "__call__", call)

    for cls in (*RECORDED, unet_mod.Conv2d, unet_mod.GroupNorm):
        spy(cls)
    try:
        yield calls
    finally:
        mp.undo()


def pairs(block: str, *indices, attention=True):
    kinds = ("resnets", "attentions") if attention else ("resnets",)
    return {f"{block}.{kind}.{i}" for i in indices for kind in kinds}


ALWAYS = {"time_embedding", "conv_in", "conv_norm_out", "conv_out"}
# reference §3.2: "Also computed on cached steps" and "Cached feature consumed", per branch
TABLE = {
    0: (pairs("up_blocks.3", 2), "up_blocks.3.attentions.1"),
    1: (pairs("down_blocks.0", 0) | pairs("up_blocks.3", 1, 2), "up_blocks.3.attentions.0"),
    2: (pairs("down_blocks.0", 0, 1) | pairs("up_blocks.3", 0, 1, 2), "up_blocks.2.upsamplers.0"),
    3: (pairs("down_blocks.0", 0, 1) | {"down_blocks.0.downsamplers.0"} | pairs("up_blocks.2", 2)
        | {"up_blocks.2.upsamplers.0"} | pairs("up_blocks.3", 0, 1, 2), "up_blocks.2.attentions.1"),
}


@pytest.mark.parametrize("branch", sorted(TABLE))
def test_cached_step_computes_the_reference_table(sd4, branch):
    model, x, t, ctx = sd4
    with recording(model) as full_calls:
        _, feature = model.deep_cache_full(x, t, ctx, branch)
    # every layer once: time embedding, conv_in and the head (4); down 3 x (2 pairs + downsampler) + 2
    # resnets (17); the mid block and its 3 layers (4); up 3 resnets + upsampler, 2 x (3 pairs +
    # upsampler), 3 pairs (24)
    assert len(full_calls) == 4 + 17 + 4 + 24
    computed, entry = TABLE[branch]
    np.testing.assert_array_equal(feature, full_calls[entry])  # the feature is that layer's output
    with recording(model) as cached_calls:
        model.deep_cache_step(0.5 * x, t + 10, ctx, branch, feature)
    assert set(cached_calls) == ALWAYS | computed


def test_every_branch_recomputes_its_skips_and_their_consumers(sd4):
    """Branches 4..11 by the rule (skip tensors 0..b and the up resnets that take them; the mid
    block never): the number of recorded layers grows with b and the mid block stays cached."""
    model, x, t, ctx = sd4
    sizes = []
    for branch in range(12):
        _, feature = model.deep_cache_full(x, t, ctx, branch)
        with recording(model) as calls:
            model.deep_cache_step(x, t, ctx, branch, feature)
        assert "mid_block" not in calls and not any(k.startswith("mid_block.") for k in calls)
        sizes.append(len(calls))
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    assert {k for k in calls if k.startswith("down_blocks.3.")} == pairs("down_blocks.3", 0, 1, attention=False)


# ---- against DeepCache's helper ---------------------------------------------------------------------
@pytest.mark.parametrize("branch", range(12))
def test_cached_step_matches_the_committed_helper_run(sd4, branch):
    model = sd4[0]
    expected = np.load(make.UNET_EXPECTED)[f"branch{branch}"]
    got = make.run_unet_minriff(model, branch)
    assert rel_err(got, expected) <= TOL
    # the fixture tells a cached step from a full one (at every branch, by > 20x the tolerance)
    inp = make.unet_inputs()
    assert rel_err(model(inp["x_cached"], make.T_CACHED, inp["context"]), expected) > 20 * TOL


@pytest.mark.oracle
def test_cached_step_matches_the_helper_live(sd4):
    oracle("torch"), oracle("diffusers"), oracle("DeepCache")
    live = make.run_unet_diffusers()
    assert sorted(live) == list(range(12))
    for branch, expected in live.items():
        assert rel_err(make.run_unet_minriff(sd4[0], branch), expected) <= TOL, branch


# ---- other configs and errors -------------------------------------------------------------------------
def _tiny():
    return init_random(unet_mod.UNet2DConditionModel(configs.TINY.unet), seed=1)


def test_tiny_config_branches_and_shapes():
    """2 blocks of 1 layer: skips conv_in, down 0 pair, down 0 downsampler, down 1 pair -> 4 branches."""
    model = _tiny()
    assert model.deep_cache_branches == 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 16), dtype=np.float32)
    ctx = rng.standard_normal((2, 5, 16), dtype=np.float32)
    shapes = {b: model.deep_cache_full(x, 500, ctx, b)[1].shape for b in range(4)}
    # b0: running input of up 1's last resnet (8 ch); b1: up 0's output after its upsampler (16 ch);
    # b2: up 0's resnet 0 output at 1/2 size; b3: the mid block's output
    assert shapes == {0: (2, 8, 8, 16), 1: (2, 16, 8, 16), 2: (2, 16, 4, 8), 3: (2, 16, 4, 8)}


@pytest.mark.parametrize("branch", [-1, 4, 12, True, 1.0, "1", None])
def test_branch_out_of_range_is_an_input_error(branch):
    model = _tiny()
    x, ctx = np.zeros((1, 4, 8, 8), np.float32), np.zeros((1, 3, 16), np.float32)
    with pytest.raises(InputError, match="DeepCache branch must be an integer from 0 to 3"):
        model.deep_cache_full(x, 1, ctx, branch)


def test_a_feature_of_another_branch_or_batch_is_refused():
    model = _tiny()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 8), dtype=np.float32)
    ctx = rng.standard_normal((2, 3, 16), dtype=np.float32)
    _, feature = model.deep_cache_full(x, 1, ctx, 0)
    for branch, xs, cs, f in ((2, x, ctx, feature), (0, x[:1], ctx[:1], feature), (0, x[:, :, :, :4] * 1, ctx, feature),
                              (0, x, ctx, None), (0, x, ctx, feature[0])):
        with pytest.raises(InputError, match="DeepCache feature has shape"):
            model.deep_cache_step(np.ascontiguousarray(xs), 1, cs, branch, f)
