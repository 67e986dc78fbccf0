"""AutoencoderTiny (TAESD): against diffusers' outputs committed by tests/fixtures/make_taesd.py (no
torch needed), the soft clamp, shapes, batch independence, config and input errors.

Acceptance (issue 15): decoded images within 1/255 on >= 99 % of pixels, latents within 1e-4 (here
relative to the largest latent, which is ~4)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff.configs import TAESD_PRESETS, TAESDConfig
from minriff.errors import ConfigError, InputError
from minriff.models import nn, random_taesd
from minriff.models.taesd import AutoencoderTiny
from minriff.weights.safetensors import SafetensorsFile
from support import fixture_script, rel_err

mt = fixture_script("make_taesd")


def fixture_model() -> AutoencoderTiny:
    """The committed diffusers folder, read straight into the model (no converter involved)."""
    config = json.loads((mt.DIFFUSERS_DIR / "config.json").read_text())
    st_file = SafetensorsFile(mt.DIFFUSERS_DIR / "diffusion_pytorch_model.safetensors")
    return nn.load(AutoencoderTiny(TAESDConfig.from_dict(config)), st_file, what="TAESD")


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img / 2 + 0.5, 0, 1) * 255).astype(np.uint8)


def assert_images_close(got, want, what=""):
    close = np.mean(np.abs(to_uint8(got).astype(int) - to_uint8(want).astype(int)) <= 1)
    assert close >= 0.99, f"{what}: only {close:.2%} of pixels within 1/255"


def check_against(model, data):
    """encode/decode of the committed inputs against diffusers' outputs."""
    lat = model.encode(data["encode_in"])
    assert lat.shape == data["encode_out"].shape and lat.dtype == np.float32
    assert rel_err(lat, data["encode_out"]) <= 1e-5
    assert np.max(np.abs(lat - data["encode_out"])) <= 1e-4
    img = model.decode(data["decode_in"])
    assert img.shape == data["decode_out"].shape
    assert rel_err(img, data["decode_out"]) <= 1e-5
    assert_images_close(img, data["decode_out"], "decode")


def test_matches_committed_diffusers_outputs():
    data = np.load(mt.EXPECTED)
    assert data["encode_out"].std() > 0.5 and data["decode_out"].std() > 0.1  # not a collapsed random model
    check_against(fixture_model(), data)


def test_parameter_names_are_the_diffusers_keys():
    keys = set(SafetensorsFile(mt.DIFFUSERS_DIR / "diffusion_pytorch_model.safetensors"))
    model = AutoencoderTiny(TAESD_PRESETS["tiny"])
    assert set(model.parameter_shapes()) == keys
    assert "decoder.layers.2.conv.0.weight" in keys and "decoder.layers.1.weight" not in keys  # 1 is the ReLU


def test_full_size_parameter_count():
    model = AutoencoderTiny(TAESDConfig())  # madebyollin/taesd: ~1.22 M per half
    assert model.encoder.num_parameters() == 1_222_532
    assert model.decoder.num_parameters() == 1_222_531


def test_decode_soft_clamps_latents_at_three():
    """tanh(z/3)·3 before the layers: latents far beyond ±3 all decode alike (tanh saturates to 1)."""
    model = fixture_model()
    rng = np.random.default_rng(0)
    sign = np.sign(rng.standard_normal((1, 4, 8, 8))).astype(np.float32)
    far = model.decode(sign * 1e3)
    np.testing.assert_array_equal(model.decode(sign * 1e6), far)
    near = model.decode(sign * 0.5)
    assert rel_err(near, far) > 0.01  # inside the range the clamp changes little, so outputs differ


@settings(max_examples=5, deadline=None)
@given(h=st.integers(1, 3), w=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_shapes_and_batch_independence(h, w, seed):
    model = random_taesd("tiny", seed=seed % 5)
    f = model.downscale
    rng = np.random.default_rng(seed)
    img = np.tanh(rng.standard_normal((2, 3, h * f, w * f), dtype=np.float32))
    lat = model.encode(img)
    assert lat.shape == (2, 4, h, w)
    assert rel_err(model.encode(img[1:])[0], lat[1]) <= 1e-6
    out = model.decode(lat)
    assert out.shape == (2, 3, h * f, w * f) and np.isfinite(out).all()
    assert rel_err(model.decode(lat[:1])[0], out[0]) <= 1e-6


def test_input_errors_name_the_problem():
    model = random_taesd("tiny")
    with pytest.raises(InputError, match="multiple of 8"):
        model.encode(np.zeros((1, 3, 12, 16), np.float32))
    with pytest.raises(InputError, match=r"\(B, 4, H, W\)"):
        model.decode(np.zeros((1, 3, 8, 8), np.float32))


@pytest.mark.parametrize("change,words", [
    (dict(encoder_block_out_channels=(8, 16, 16, 16)), "equal positive integers"),
    (dict(decoder_block_out_channels=(8, 8), num_decoder_blocks=(1, 1)), "as many stages"),
    (dict(num_encoder_blocks=(1, 3, 3)), "one length"),
    (dict(act_fn="silu"), "act_fn"),
    (dict(upsampling_scaling_factor=4), "upsampling_scaling_factor"),
    (dict(scaling_factor=0.0), "scaling_factor"),
])
def test_config_refuses_what_does_not_run(change, words):
    with pytest.raises(ConfigError, match=words):
        TAESDConfig.from_dict({**TAESDConfig().to_dict(), **change})


def test_config_reads_the_hub_config_json():
    # madebyollin/taesd's config.json: diffusers' bookkeeping and `block_out_channels` are ignored
    hub = {"_class_name": "AutoencoderTiny", "_diffusers_version": "0.20.0.dev0", "act_fn": "relu",
           "block_out_channels": [64, 64, 64, 64], "decoder_block_out_channels": [64, 64, 64, 64],
           "encoder_block_out_channels": [64, 64, 64, 64], "force_upcast": False, "in_channels": 3,
           "latent_channels": 4, "latent_magnitude": 3, "latent_shift": 0.5, "num_decoder_blocks": [3, 3, 3, 1],
           "num_encoder_blocks": [1, 3, 3, 3], "out_channels": 3, "scaling_factor": 1.0,
           "upsampling_scaling_factor": 2}
    assert TAESDConfig.from_dict(hub) == TAESDConfig()
