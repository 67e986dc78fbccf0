"""Models held in float16 (the default for fp16 weights files): the same float32 computation as the
model widened to float32, and within 1e-3 (relative) of the float32 model before its weights were
rounded to float16. UNet at the tiny and a medium config (the medium one runs the Winograd and
weight-block paths), VAE decode and text encoder at tiny size; the float64 reference too."""
from __future__ import annotations

import numpy as np
import pytest

from minriff import configs, kernels
from minriff.models.clip import CLIPTextModel
from minriff.models.init import init_random
from minriff.models.unet import UNet2DConditionModel
from minriff.models.vae import AutoencoderKL
from support import rel_err

MEDIUM_UNET = configs.UNetConfig(block_out_channels=(128, 256), layers_per_block=1,
                                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                 attention_head_dim=8, cross_attention_dim=64, norm_num_groups=32, sample_size=32)
UNETS = {"tiny": (configs.TINY.unet, 8), "medium": (MEDIUM_UNET, 32)}  # config, latent size


def _three(cls, cfg, seed):
    """The model held in float16, the same values held in float32, and the float32 model they were
    rounded from (init_random draws the same float32 values for both dtypes)."""
    half = init_random(cls(cfg), seed=seed, dtype=np.float16)
    widened = half.__class__(cfg)
    for name, p in half.named_parameters():
        widened._set(name, p.astype(np.float32))
    return half, widened, init_random(cls(cfg), seed=seed)


def _on_ref64(model, cfg, run):
    """run(model) on the ref backend with the float16 values widened to float64."""
    wide = model.__class__(cfg)
    for name, p in model.named_parameters():
        wide._set(name, p.astype(np.float64))
    old = kernels.backend()
    try:
        kernels.backend("ref")
        return run(wide)
    finally:
        kernels.backend(old)


def _check(half, widened, full, run, ref64=None, tol=5e-3) -> None:
    assert {p.dtype for _, p in half.named_parameters()} == {np.dtype(np.float16)}
    got = run(half)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert np.array_equal(got, run(widened))  # the same arithmetic on the same values
    err = rel_err(got, run(full))
    assert err <= tol, err
    if ref64 is not None:
        assert rel_err(got, ref64) <= 1e-5
    print(f"relative error of the float16-held weights vs the unrounded float32 model: {err:.2e}")


@pytest.mark.parametrize("size", sorted(UNETS))
def test_unet_half_weights(size):
    cfg, hw = UNETS[size]
    half, widened, full = _three(UNet2DConditionModel, cfg, seed=7)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, hw, hw), dtype=np.float32)
    ctx = rng.standard_normal((2, 5, cfg.cross_attention_dim), dtype=np.float32)
    t = np.array([981.0, 41.0], dtype=np.float32)
    ref = _on_ref64(half, cfg, lambda m: m(x.astype(np.float64), t, ctx.astype(np.float64))) if size == "tiny" else None
    _check(half, widened, full, lambda m: m(x, t, ctx), ref)


def test_vae_decode_half_weights():
    cfg = configs.TINY.vae
    half, widened, full = _three(AutoencoderKL, cfg, seed=8)
    z = np.random.default_rng(1).standard_normal((1, cfg.latent_channels, 8, 12), dtype=np.float32)
    _check(half, widened, full, lambda m: m.decode(z), _on_ref64(half, cfg, lambda m: m.decode(z.astype(np.float64))))


def test_text_encoder_half_weights():
    cfg = configs.TINY.text_encoder
    half, widened, full = _three(CLIPTextModel, cfg, seed=9)
    ids = np.random.default_rng(2).integers(0, cfg.vocab_size, (2, 77))
    _check(half, widened, full, lambda m: m(ids), _on_ref64(half, cfg, lambda m: m(ids)))
