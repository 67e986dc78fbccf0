"""Live comparison with diffusers' UNet2DConditionModel (pytest -m oracle): the fixture cases
rebuilt from scratch, plus configs drawn by hypothesis. Weights go state dict -> safetensors
file -> minriff's nn.load, exactly the path a converted checkpoint takes."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import oracle
from support.model_cases import check_live, drawn_case, mm

pytestmark = pytest.mark.oracle


@pytest.mark.parametrize("name", sorted(mm.UNET_CASES))
def test_live_matches_diffusers(name, tmp_path):
    oracle("torch"), oracle("diffusers")
    check_live("unet", name, tmp_path)


@st.composite
def unet_cases(draw):
    n = draw(st.integers(2, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    ch = tuple(groups * draw(st.integers(1, 4)) * 2 for _ in range(n))  # even, so 2 heads always fit
    cross = [draw(st.booleans()) for _ in range(n - 1)] + [False]
    down = tuple("CrossAttnDownBlock2D" if c else "DownBlock2D" for c in cross)
    up = tuple("CrossAttnUpBlock2D" if c else "UpBlock2D" for c in reversed(cross))
    heads = tuple(draw(st.sampled_from([h for h in (1, 2) if c % h == 0])) for c in ch)
    # freq_shift 1 on a 2-wide time embedding (ch[0] == 2) divides by zero: the kernels refuse it
    config = dict(block_out_channels=ch, layers_per_block=draw(st.integers(1, 2)), norm_num_groups=groups,
                  down_block_types=down, up_block_types=up, attention_head_dim=heads,
                  cross_attention_dim=draw(st.integers(3, 9)), use_linear_projection=draw(st.booleans()),
                  flip_sin_to_cos=draw(st.booleans()), freq_shift=draw(st.integers(0, 1 if ch[0] > 2 else 0)),
                  downsample_padding=draw(st.integers(0, 1)))
    d = 2 ** (n - 1)
    # any size the downsamplers take (padding 0 needs >= d): the upsamplers then meet the skips' sizes
    lo = d if config["downsample_padding"] == 0 else 1
    hw = (draw(st.integers(lo, 3 * d)), draw(st.integers(lo, 3 * d)))
    return dict(config=config, batch=draw(st.integers(1, 2)), hw=hw, seq=draw(st.integers(1, 6)),
                t=tuple(float(draw(st.integers(0, 999))) for _ in range(1)))


@settings(max_examples=8)
@given(case=unet_cases())
def test_live_drawn_configs(case, tmp_path_factory):
    oracle("torch"), oracle("diffusers")
    with drawn_case(mm.UNET_CASES, case) as name:
        check_live("unet", name, tmp_path_factory.mktemp("unet"))


@settings(max_examples=40)
@given(n_in=st.integers(1, 40), n_out=st.integers(1, 90), m_in=st.integers(1, 9), m_out=st.integers(1, 30))
def test_resize_nearest_is_torch_interpolate_nearest(n_in, n_out, m_in, m_out):
    oracle("torch")
    import numpy as np
    import torch

    from minriff.models.blocks import resize_nearest

    x = np.arange(2 * n_in * m_in, dtype=np.float32).reshape(1, 2, n_in, m_in)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=(n_out, m_out), mode="nearest").numpy()
    assert np.array_equal(resize_nearest(x, (n_out, m_out)), want)
