"""The float16-held UNet and VAE against diffusers in float32 on the same weights (pytest -m
oracle): diffusers' random models, their weights rounded to float16 (what a converted fp16 file
holds); minriff keeps them in float16 (nn.load dtype=None), diffusers computes on them widened to
float32. Tiny and medium UNet configs (test_half_weights.py), a tiny VAE decode."""
from __future__ import annotations

import numpy as np
import pytest

from minriff import configs
from minriff.models import nn
from minriff.models.unet import UNet2DConditionModel
from minriff.models.vae import AutoencoderKL
from support import oracle, rel_err

pytestmark = pytest.mark.oracle

MEDIUM_UNET = dict(block_out_channels=(128, 256), layers_per_block=1,
                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                   attention_head_dim=8, cross_attention_dim=64, norm_num_groups=32, sample_size=32)
UNETS = {"tiny": (configs.TINY.unet.to_dict(), 8), "medium": (MEDIUM_UNET, 32)}


def _diffusers_with_half_weights(torch, cls, config: dict, seed: int):
    """-> (diffusers model on the float16-rounded weights in float32, those weights in float16)."""
    torch.manual_seed(seed)
    kw = {k: v for k, v in config.items() if v is not None}
    tm = cls(**kw).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in tm.parameters():  # default init leaves norms at 1 / biases at 0: perturb them
            if p.ndim == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    half = {k: v.detach().numpy().astype(np.float16) for k, v in tm.state_dict().items()}
    tm.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in half.items()})
    return tm, half


@pytest.mark.parametrize("size", sorted(UNETS))
def test_half_held_unet_matches_diffusers_float32(size):
    torch, diffusers = oracle("torch"), oracle("diffusers")
    config, hw = UNETS[size]
    tm, half = _diffusers_with_half_weights(torch, diffusers.UNet2DConditionModel, config, seed=3)
    model = nn.load(UNet2DConditionModel(configs.UNetConfig.from_dict(dict(tm.config))), half, dtype=None)
    assert {p.dtype for _, p in model.named_parameters()} == {np.dtype(np.float16)}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, hw, hw), dtype=np.float32)
    t = np.array([981.0, 41.0], dtype=np.float32)
    ctx = rng.standard_normal((2, 7, tm.config.cross_attention_dim), dtype=np.float32)
    with torch.no_grad():
        want = tm(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(ctx)).sample.numpy()
    err = rel_err(model(x, t, ctx), want)
    print(f"{size} UNet, float16-held vs diffusers float32: relative error {err:.1e}")
    assert err <= 1e-3


def test_half_held_vae_decode_matches_diffusers_float32():
    torch, diffusers = oracle("torch"), oracle("diffusers")
    tm, half = _diffusers_with_half_weights(torch, diffusers.AutoencoderKL, configs.TINY.vae.to_dict(), seed=5)
    model = nn.load(AutoencoderKL(configs.VAEConfig.from_dict(dict(tm.config))), half, dtype=None)
    z = np.random.default_rng(1).standard_normal((1, 4, 8, 12), dtype=np.float32)
    with torch.no_grad():
        want = tm.decode(torch.from_numpy(z)).sample.numpy()
    err = rel_err(model.decode(z), want)
    print(f"tiny VAE decode, float16-held vs diffusers float32: relative error {err:.1e}")
    assert err <= 1e-3
