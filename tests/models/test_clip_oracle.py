"""CLIP text encoder live against transformers' CLIPTextModel (same random weights, float32)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff.configs import CLIPTextConfig
from minriff.models import nn
from minriff.models.clip import CLIPTextModel
from support import fixture_script, oracle, rel_err

make_clip = fixture_script("make_clip")

pytestmark = pytest.mark.oracle


def check(cfg: dict, weights, ids):
    oracle("torch"), oracle("transformers")
    expected = make_clip.run_transformers(cfg, weights, ids)
    model = nn.load(CLIPTextModel(CLIPTextConfig.from_dict(cfg)), weights, what="text encoder")
    for i, h in enumerate(model.hidden_states(ids)):
        assert rel_err(h, expected[f"expected.hidden_states.{i}"]) < 1e-5, f"hidden state {i}"
    assert rel_err(model(ids), expected["expected.last_hidden_state"]) < 1e-4


@pytest.mark.parametrize("name", sorted(make_clip.CLIP_CASES))
def test_fixture_cases_live(name):
    oracle("torch")
    cfg, tensors = make_clip.make_case(name)
    weights = {k: v for k, v in tensors.items() if k.startswith("text_model.")}
    check(cfg, weights, tensors["input_ids"])


@settings(max_examples=8)
@given(heads=st.integers(1, 4), head_dim=st.integers(1, 12), inter=st.integers(1, 70), layers=st.integers(1, 3),
       act=st.sampled_from(["quick_gelu", "gelu"]), batch=st.integers(1, 3), seq=st.integers(1, 20),
       seed=st.integers(0, 2**16))
def test_drawn_configs_live(heads, head_dim, inter, layers, act, batch, seq, seed):
    cfg = dict(vocab_size=41, hidden_size=heads * head_dim, intermediate_size=inter, num_hidden_layers=layers,
               num_attention_heads=heads, max_position_embeddings=20, hidden_act=act, layer_norm_eps=1e-5)
    weights = make_clip.random_weights(cfg, seed)
    ids = np.random.default_rng(seed).integers(0, 41, size=(batch, seq), dtype=np.int64)
    check(cfg, weights, ids)
