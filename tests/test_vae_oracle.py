"""Live comparison with diffusers' AutoencoderKL (pytest -m oracle): the fixture cases rebuilt
from scratch, plus configs drawn by hypothesis; weights via a safetensors file and nn.load."""
from __future__ import annotations

import importlib.util

import pytest
from hypothesis import given, settings, strategies as st

from conftest import FIXTURES, oracle
from minriff import configs, nn
from minriff.vae import AutoencoderKL

_spec = importlib.util.spec_from_file_location("make_models", FIXTURES / "make_models.py")
mm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mm)

pytestmark = pytest.mark.oracle


def _compare(name, tmp_path):
    from safetensors.numpy import load_file, save_file

    r = mm.run_vae(name)
    path = tmp_path / f"{name}.safetensors"
    save_file(r["weights"], str(path))
    model = nn.load(AutoencoderKL(configs.VAEConfig.from_dict(r["config"])), load_file(str(path)), what="VAE")
    trace = {}
    mean, logvar = model.encode(r["img"], trace=trace)
    z = model.sample(mean, logvar, r["noise"])
    decoded = model.decode(r["z"], trace=trace)
    for got, want in ((mean, "mean"), (logvar, "logvar"), (z, "z"), (decoded, "decoded")):
        assert mm.rel_err(got, r[want]) <= 1e-4, want
    mm.check_trace(trace, r["trace"], 1e-5)


@pytest.mark.parametrize("name", sorted(mm.VAE_CASES))
def test_live_matches_diffusers(name, tmp_path):
    oracle("torch"), oracle("diffusers")
    _compare(name, tmp_path)


@st.composite
def vae_cases(draw):
    n = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    ch = tuple(groups * draw(st.integers(1, 4)) for _ in range(n))
    config = dict(block_out_channels=ch, layers_per_block=draw(st.integers(1, 2)), norm_num_groups=groups,
                  latent_channels=draw(st.integers(1, 4)),
                  down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n)
    f = 2 ** (n - 1)
    # latents >= 2 wide: torch's GroupNorm refuses a group of one value (1 channel × 1×1)
    return dict(config=config, batch=draw(st.integers(1, 2)),
                hw=(f * draw(st.integers(1, 4)), f * draw(st.integers(2, 4))))


@settings(max_examples=8)
@given(case=vae_cases())
def test_live_drawn_configs(case, tmp_path_factory):
    oracle("torch"), oracle("diffusers")
    mm.VAE_CASES["_drawn"] = case
    try:
        _compare("_drawn", tmp_path_factory.mktemp("vae"))
    finally:
        del mm.VAE_CASES["_drawn"]
