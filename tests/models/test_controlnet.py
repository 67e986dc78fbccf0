"""ControlNetModel and the UNet's residual inputs against diffusers (tests/fixtures/make_controlnet.py:
ControlNet A's residuals at scale 0.7 and in guess mode, the tiny UNet's eps with them added; live
under `-m oracle`), plus the rules a fixture cannot show: zero residuals change nothing, the guess-mode
ramp, the channel order, and the errors."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from minriff.configs import CONTROLNET_PRESETS
from minriff.errors import InputError
from minriff.models import init_random
from minriff.models.controlnet import ControlNetModel
from minriff.weights import load_models
from minriff.weights.controlnet import convert_controlnet, load_controlnet
from support import FIXTURES, fixture_script, oracle, rel_err

make = fixture_script("make_controlnet")
pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.fixture(scope="module")
def net_a(tmp_path_factory):
    out = tmp_path_factory.mktemp("cn") / "a.safetensors"
    convert_controlnet(make.A_DIFFUSERS, out, dtype="fp32", log=lambda m: None)
    return load_controlnet(out)


@pytest.fixture(scope="module")
def unet():
    return load_models(FIXTURES / "pipeline" / "tiny_sd.safetensors", dtype=np.float32)["unet"]


def residuals(net, tag):
    inp = make.model_inputs()
    scale, guess = {"plain": (0.7, False), "guess": (1.0, True)}[tag]
    return net(inp["x"], inp["t"], inp["context"], inp["hint"], scale, guess)


@pytest.mark.parametrize("tag", ["plain", "guess"])
def test_residuals_match_diffusers(net_a, tag):
    data = np.load(make.EXPECTED)
    down, mid = residuals(net_a, tag)
    assert len(down) == 4
    for k, r in enumerate(down):
        assert rel_err(r, data[f"model_{tag}_down{k}"]) < 1e-5, k
    assert rel_err(mid, data[f"model_{tag}_mid"]) < 1e-5


def test_unet_with_residuals_matches_diffusers(net_a, unet):
    data = np.load(make.EXPECTED)
    inp = make.model_inputs()
    down, mid = residuals(net_a, "plain")
    eps = unet(inp["x"], inp["t"], inp["context"], down_block_additional_residuals=down,
               mid_block_additional_residual=mid)
    assert rel_err(eps, data["model_unet_eps"]) < 1e-5
    plain = unet(inp["x"], inp["t"], inp["context"])
    assert rel_err(plain, data["model_unet_eps"]) > 0.05  # the residuals matter in this fixture


def test_zero_residuals_change_nothing(unet):
    inp = make.model_inputs()
    shapes = [(1, 8, 64, 16), (1, 8, 64, 16), (1, 8, 32, 8), (1, 16, 32, 8)]
    eps = unet(inp["x"], inp["t"], inp["context"], down_block_additional_residuals=[np.zeros(s, np.float32)
                                                                                    for s in shapes],
               mid_block_additional_residual=np.zeros((1, 16, 32, 8), np.float32))
    assert np.array_equal(eps, unet(inp["x"], inp["t"], inp["context"]))


def test_residual_errors(unet, net_a):
    inp = make.model_inputs()
    down, mid = residuals(net_a, "plain")
    with pytest.raises(InputError, match="both"):
        unet(inp["x"], inp["t"], inp["context"], down_block_additional_residuals=down)
    with pytest.raises(InputError, match="3 down-block residuals for 4"):
        unet(inp["x"], inp["t"], inp["context"], down_block_additional_residuals=down[:3],
             mid_block_additional_residual=mid)
    with pytest.raises(InputError, match="residual of shape"):
        unet(inp["x"], inp["t"], inp["context"], down_block_additional_residuals=down[::-1],
             mid_block_additional_residual=mid)
    with pytest.raises(InputError, match="control image must be"):
        net_a(inp["x"], inp["t"], inp["context"], inp["hint"][:, :, :256])


def test_guess_mode_ramp(net_a):
    ramp = net_a.scales(12, 0.5, guess_mode=True)
    assert len(ramp) == 13 and ramp[-1] == pytest.approx(0.5)
    assert ramp == pytest.approx([0.5 * 10 ** (-1 + k / 12) for k in range(13)], rel=1e-6)
    assert net_a.scales(12, 0.5, guess_mode=False) == [0.5] * 13


def test_bgr_channel_order_flips_the_hint(net_a):
    bgr = ControlNetModel(dataclasses.replace(net_a.config, controlnet_conditioning_channel_order="bgr"))
    for name, p in net_a.named_parameters():
        bgr._set(name, p)
    hint = make.model_inputs()["hint"]
    assert np.array_equal(bgr.embed_hint(hint), net_a.embed_hint(hint[:, ::-1]))
    assert not np.allclose(bgr.embed_hint(hint), net_a.embed_hint(hint))


def test_skip_channels_of_sd15():
    net = ControlNetModel(CONTROLNET_PRESETS["sd15"])  # unallocated: shapes only
    assert net.skip_channels == [320] * 4 + [640] * 3 + [1280] * 5
    assert net.hint_size(64, 80) == (512, 640)
    assert len(net.controlnet_down_blocks) == 12


def test_tiny_preset_builds_and_runs():
    net = init_random(ControlNetModel(CONTROLNET_PRESETS["tiny"]), seed=1)
    inp = make.model_inputs()
    down, mid = net(inp["x"], inp["t"], inp["context"], inp["hint"])
    assert [r.shape[1] for r in down] == net.skip_channels and mid.shape == (1, 16, 32, 8)


@pytest.mark.oracle
@pytest.mark.parametrize("tag", ["plain", "guess"])
def test_residuals_live(tmp_path, tag):
    """ControlNet A from its folder, run by diffusers now, against minriff loading the same folder."""
    torch = oracle("torch")
    diffusers = oracle("diffusers")
    ref = diffusers.ControlNetModel.from_pretrained(make.A_DIFFUSERS).eval()
    convert_controlnet(make.A_DIFFUSERS, tmp_path / "a.safetensors", dtype="fp32", log=lambda m: None)
    ours = load_controlnet(tmp_path / "a.safetensors")
    inp = make.model_inputs()
    scale, guess = {"plain": (0.7, False), "guess": (1.0, True)}[tag]
    with torch.no_grad():
        down, mid = ref(torch.from_numpy(inp["x"]), torch.tensor(inp["t"]),
                        encoder_hidden_states=torch.from_numpy(inp["context"]),
                        controlnet_cond=torch.from_numpy(inp["hint"]), conditioning_scale=scale, guess_mode=guess,
                        return_dict=False)
    got_down, got_mid = ours(inp["x"], inp["t"], inp["context"], inp["hint"], scale, guess)
    for a, b in zip(got_down, down):
        assert rel_err(a, b.numpy()) < 1e-5
    assert rel_err(got_mid, mid.numpy()) < 1e-5
