"""Live comparison with diffusers' UNet2DConditionModel (pytest -m oracle): the fixture cases
rebuilt from scratch, plus configs drawn by hypothesis. Weights go state dict -> safetensors
file -> minriff's nn.load, exactly the path a converted checkpoint takes."""
from __future__ import annotations

import importlib.util

import pytest
from hypothesis import given, settings, strategies as st

from conftest import FIXTURES, oracle
from minriff import configs, nn
from minriff.unet import UNet2DConditionModel

_spec = importlib.util.spec_from_file_location("make_models", FIXTURES / "make_models.py")
mm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mm)

pytestmark = pytest.mark.oracle


def _compare(name, tmp_path):
    from safetensors.numpy import load_file, save_file

    r = mm.run_unet(name)
    path = tmp_path / f"{name}.safetensors"
    save_file(r["weights"], str(path))
    model = nn.load(UNet2DConditionModel(configs.UNetConfig.from_dict(r["config"])), load_file(str(path)), what="UNet")
    trace = {}
    out = model(r["x"], r["t"], r["context"], trace=trace)
    assert mm.rel_err(out, r["out"]) <= 1e-4
    mm.check_trace(trace, r["trace"], 1e-5)


@pytest.mark.parametrize("name", sorted(mm.UNET_CASES))
def test_live_matches_diffusers(name, tmp_path):
    oracle("torch"), oracle("diffusers")
    _compare(name, tmp_path)


@st.composite
def unet_cases(draw):
    n = draw(st.integers(2, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    ch = tuple(groups * draw(st.integers(1, 4)) * 2 for _ in range(n))  # even, so 2 heads always fit
    cross = [draw(st.booleans()) for _ in range(n - 1)] + [False]
    down = tuple("CrossAttnDownBlock2D" if c else "DownBlock2D" for c in cross)
    up = tuple("CrossAttnUpBlock2D" if c else "UpBlock2D" for c in reversed(cross))
    heads = tuple(draw(st.sampled_from([h for h in (1, 2) if c % h == 0])) for c in ch)
    config = dict(block_out_channels=ch, layers_per_block=draw(st.integers(1, 2)), norm_num_groups=groups,
                  down_block_types=down, up_block_types=up, attention_head_dim=heads,
                  cross_attention_dim=draw(st.integers(3, 9)), use_linear_projection=draw(st.booleans()),
                  flip_sin_to_cos=draw(st.booleans()), freq_shift=draw(st.integers(0, 1)),
                  downsample_padding=draw(st.integers(0, 1)))
    d = 2 ** (n - 1)
    hw = (d * draw(st.integers(1, 3)), d * draw(st.integers(1, 3)))
    return dict(config=config, batch=draw(st.integers(1, 2)), hw=hw, seq=draw(st.integers(1, 6)),
                t=tuple(float(draw(st.integers(0, 999))) for _ in range(1)))


@settings(max_examples=8)
@given(case=unet_cases())
def test_live_drawn_configs(case, tmp_path_factory):
    oracle("torch"), oracle("diffusers")
    mm.UNET_CASES["_drawn"] = case
    try:
        _compare("_drawn", tmp_path_factory.mktemp("unet"))
    finally:
        del mm.UNET_CASES["_drawn"]
