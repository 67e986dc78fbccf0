"""AutoencoderKL: committed diffusers fixtures (no torch needed), invariants, input errors, and a
full-size SD 1.5 decode 64×64 -> 512×512 on random weights."""
from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff import configs
from minriff.errors import ConfigError, InputError
from minriff.models.init import init_random
from minriff.models.vae import AutoencoderKL
from support.model_cases import check_vae, fixture_model, mm


@pytest.mark.parametrize("name", sorted(mm.VAE_CASES))
def test_matches_diffusers_fixture(name):
    check_vae(*fixture_model("vae", name))


def _tiny(seed=0, **over):
    cfg = configs.VAEConfig(**{**configs.TINY.vae.__dict__, **over})
    return init_random(AutoencoderKL(cfg), seed=seed), cfg


@settings(max_examples=5)
@given(h=st.integers(1, 3), w=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_shapes_and_batch_independence(h, w, seed):
    """Non-square sizes: encode gives (B, 4, H/8, W/8), decode gives (B, 3, 8h, 8w); batch items
    do not mix; logvar stays in [-30, 20]."""
    model, cfg = _tiny(seed=seed % 7)
    f = cfg.downscale
    rng = np.random.default_rng(seed)
    img = np.tanh(rng.standard_normal((2, 3, h * f, w * f), dtype=np.float32))
    mean, logvar = model.encode(img)
    assert mean.shape == logvar.shape == (2, cfg.latent_channels, h, w)
    assert logvar.min() >= -30 and logvar.max() <= 20
    dec = model.decode(mean)
    assert dec.shape == (2, 3, h * f, w * f) and np.isfinite(dec).all()
    alone = model.decode(mean[1:])
    assert mm.rel_err(alone[0], dec[1]) <= 1e-5


def test_logvar_is_clamped():
    """Push the quant_conv bias so the raw log-variance leaves [-30, 20] on both sides."""
    model, cfg = _tiny()
    L = cfg.latent_channels
    bias = model.quant_conv.bias.copy()
    bias[L:L + 1] += 1e4
    bias[L + 1:] -= 1e4
    model.quant_conv.bias = bias
    img = np.zeros((1, 3, 8, 8), np.float32)
    _, logvar = model.encode(img)
    assert np.all(logvar[:, :1] == 20.0) and np.all(logvar[:, 1:] == -30.0)


def test_sample_is_mean_plus_std_times_noise():
    model, _ = _tiny()
    rng = np.random.default_rng(0)
    mean = rng.standard_normal((1, 4, 3, 5)).astype(np.float32)
    logvar = rng.uniform(-3, 2, (1, 4, 3, 5)).astype(np.float32)
    noise = rng.standard_normal((1, 4, 3, 5)).astype(np.float32)
    np.testing.assert_allclose(model.sample(mean, logvar, noise), mean + np.sqrt(np.exp(logvar)) * noise,
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match="noise shape"):
        model.sample(mean, logvar, noise[..., :4])


@pytest.mark.parametrize("call, shape, match", [
    ("encode", (1, 3, 12, 16), "multiple of 8"),
    ("encode", (1, 1, 16, 16), r"\(B, 3, H, W\)"),
    ("encode", (3, 16, 16), r"\(B, 3, H, W\)"),
    ("decode", (1, 3, 2, 2), r"\(B, 4, H, W\)"),
    ("decode", (1, 4, 0, 2), "positive multiple"),
])
def test_bad_inputs_raise_input_error(call, shape, match):
    model = AutoencoderKL(configs.TINY.vae)  # checks run before any parameter is used
    with pytest.raises(InputError, match=match):
        getattr(model, call)(np.zeros(shape, np.float32))


def test_unknown_block_type_is_a_config_error():
    with pytest.raises(ConfigError, match="DownEncoderBlock2D"):
        AutoencoderKL(configs.VAEConfig(down_block_types=("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",)))


def test_sd15_keys_and_parameter_count():
    """SD 1.5 VAE: 83,653,863 parameters (diffusers' count), current attention key names."""
    shapes = AutoencoderKL(configs.SD15.vae).parameter_shapes()
    assert sum(int(np.prod(s)) for s in shapes.values()) == 83_653_863
    assert shapes["encoder.mid_block.attentions.0.to_q.weight"] == (512, 512)
    assert shapes["decoder.mid_block.attentions.0.group_norm.weight"] == (512,)
    assert shapes["encoder.conv_out.weight"] == (8, 512, 3, 3)
    assert shapes["decoder.up_blocks.3.resnets.2.conv2.weight"] == (128, 128, 3, 3)
    assert shapes["decoder.up_blocks.2.resnets.0.conv_shortcut.weight"] == (256, 512, 1, 1)
    assert shapes["encoder.down_blocks.0.downsamplers.0.conv.weight"] == (128, 128, 3, 3)


@pytest.mark.slow  # 48-64 s on the shared 2-core machine (cpu backend), incl. ~1 s random init
def test_full_size_sd15_decode_64x64_to_512x512():
    t0 = time.perf_counter()
    model = init_random(AutoencoderKL(configs.SD15.vae), seed=0)
    z = np.random.default_rng(0).standard_normal((1, 4, 64, 64), dtype=np.float32)
    img = model.decode(z)
    print(f"full-size VAE decode incl. random init: {time.perf_counter() - t0:.1f} s")
    assert img.shape == (1, 3, 512, 512) and img.dtype == np.float32
    assert np.isfinite(img).all() and img.std() > 0
