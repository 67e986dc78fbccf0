"""AutoencoderTiny against diffusers live (`pytest -m oracle`): the fixture model of make_taesd.py
rebuilt now, drawn configurations, and madebyollin/taesd's full-size shapes on random weights.

Weights go state dict -> safetensors file -> nn.load, the path a converted file takes. Drawn
configurations are checked against diffusers run in float64 (float32 torch would test torch's own
rounding at these sizes, see tests/support/model_cases.py)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff.configs import TAESDConfig
from minriff.models import nn
from minriff.models.taesd import AutoencoderTiny
from support import fixture_script, oracle, rel_err

pytestmark = pytest.mark.oracle
mt = fixture_script("make_taesd")


def to_minriff(model, tmp_path) -> AutoencoderTiny:
    from safetensors.numpy import load_file, save_file

    path = tmp_path / "taesd.safetensors"
    save_file({k: v.float().numpy() for k, v in model.state_dict().items()}, str(path))
    cfg = TAESDConfig.from_dict({k: v for k, v in dict(model.config).items() if not k.startswith("_")})
    return nn.load(AutoencoderTiny(cfg), load_file(str(path)), what="TAESD")


def to_uint8(img):
    return np.round(np.clip(img / 2 + 0.5, 0, 1) * 255).astype(np.int64)


def test_fixture_model_live(tmp_path):
    oracle("torch")
    oracle("diffusers")
    model = mt.build_taesd()
    ours = to_minriff(model, tmp_path)
    want = mt.run_taesd(model)
    lat = ours.encode(mt.encode_input())
    assert np.max(np.abs(lat - want["encode_out"])) <= 1e-4 and rel_err(lat, want["encode_out"]) <= 1e-5
    img = ours.decode(mt.decode_input())
    assert np.mean(np.abs(to_uint8(img) - to_uint8(want["decode_out"])) <= 1) >= 0.99
    assert rel_err(img, want["decode_out"]) <= 1e-5


@settings(max_examples=12, deadline=None)
@given(enc=st.integers(1, 6), dec=st.integers(1, 6), stages=st.integers(1, 4), latent=st.integers(1, 5),
       blocks=st.lists(st.integers(0, 2), min_size=8, max_size=8), seed=st.integers(0, 2**16),
       in_ch=st.integers(1, 4), out_ch=st.integers(1, 4))
def test_drawn_configs_match_diffusers_in_float64(tmp_path_factory, enc, dec, stages, latent, blocks, seed,
                                                  in_ch, out_ch):
    torch = oracle("torch")
    from diffusers import AutoencoderTiny as TorchTiny

    torch.manual_seed(seed)
    model = TorchTiny(in_channels=in_ch, out_channels=out_ch, encoder_block_out_channels=(enc,) * stages,
                      decoder_block_out_channels=(dec,) * stages, latent_channels=latent,
                      num_encoder_blocks=tuple(blocks[:stages]), num_decoder_blocks=tuple(blocks[4:4 + stages]))
    with torch.no_grad():
        for p in model.parameters():  # O(1) activations (torch's default init shrinks them)
            p.copy_(torch.randn(p.shape) * (1.0 / max(1, p[0].numel())) ** 0.5)
    ours = to_minriff(model.eval(), tmp_path_factory.mktemp("drawn"))
    f = 2 ** (stages - 1)
    rng = np.random.default_rng(seed)
    img = np.tanh(rng.standard_normal((2, in_ch, 3 * f, 2 * f))).astype(np.float32)
    z = (rng.standard_normal((1, latent, 3, 2)) * 2).astype(np.float32)
    exact = model.double()
    with torch.no_grad():
        lat64 = exact.encode(torch.from_numpy(img).double()).latents.numpy()
        out64 = exact.decode(torch.from_numpy(z).double()).sample.numpy()
    assert rel_err(ours.encode(img), lat64) <= 1e-5
    assert rel_err(ours.decode(z), out64) <= 1e-5


def test_full_size_shapes_random_weights(tmp_path):
    """madebyollin/taesd's architecture (64 channels) on random weights, a 16x24 latent."""
    torch = oracle("torch")
    from diffusers import AutoencoderTiny as TorchTiny

    torch.manual_seed(0)
    model = TorchTiny()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * (1.0 / max(1, p[0].numel())) ** 0.5)
    model.eval()
    ours = to_minriff(model, tmp_path)
    rng = np.random.default_rng(1)
    z = (rng.standard_normal((1, 4, 16, 24)) * 2).astype(np.float32)
    img = np.tanh(rng.standard_normal((1, 3, 128, 192))).astype(np.float32)
    with torch.no_grad():
        out = model.decode(torch.from_numpy(z)).sample.numpy()
        lat = model.encode(torch.from_numpy(img)).latents.numpy()
    assert np.mean(np.abs(to_uint8(ours.decode(z)) - to_uint8(out)) <= 1) >= 0.99
    assert rel_err(ours.decode(z), out) <= 1e-4
    assert np.max(np.abs(ours.encode(img) - lat)) <= 1e-4 * max(1.0, np.abs(lat).max())
