"""CLIP text encoder: committed transformers outputs (tests/fixtures/clip, made by make_clip.py),
causality, input checks, and a full-size random-weights run. No torch needed."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from minriff import kernels
from minriff.configs import SD15, TINY, CLIPTextConfig
from minriff.errors import InputError, WeightsError
from minriff.models import nn
from minriff.models.clip import CLIPTextModel
from support import FIXTURES, rel_err

CASES = sorted(p.stem for p in (FIXTURES / "clip").glob("*.safetensors"))


def load_case(name):
    path = FIXTURES / "clip" / f"{name}.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        cfg = CLIPTextConfig.from_dict(json.loads(f.metadata()["config"]))
    tensors = load_file(str(path))
    weights = {k: v for k, v in tensors.items() if k.startswith("text_model.")}
    model = nn.load(CLIPTextModel(cfg), weights, what="text encoder")
    return model, tensors


@pytest.fixture(params=["ref", "cpu"])
def backend(request):
    old = kernels.backend()
    kernels.backend(request.param)
    yield request.param
    kernels.backend(old)


def test_fixtures_present():
    assert set(CASES) >= {"tiny", "odd3", "gelu1", "wide8"}


@pytest.mark.parametrize("name", CASES)
def test_matches_transformers_fixture(name, backend):
    model, t = load_case(name)
    ids = t["input_ids"]
    states = model.hidden_states(ids)
    n_states = sum(k.startswith("expected.hidden_states.") for k in t)
    assert len(states) == n_states == model.config.num_hidden_layers + 1
    for i, h in enumerate(states):
        assert h.shape == t[f"expected.hidden_states.{i}"].shape
        assert rel_err(h, t[f"expected.hidden_states.{i}"]) < 1e-5, f"hidden state {i}"
    out = model(ids)
    ref = t["expected.last_hidden_state"]
    assert out.shape == ref.shape == (*ids.shape, model.config.hidden_size)
    assert out.dtype == np.float32
    assert rel_err(out, ref) < 1e-4


def test_tiny_case_uses_tiny_preset_shapes():
    model, _ = load_case("tiny")
    assert model.parameter_shapes() == CLIPTextModel(TINY.text_encoder).parameter_shapes()


def test_keys_are_transformers_keys():
    keys = CLIPTextModel(SD15.text_encoder).parameter_shapes()
    assert keys["text_model.embeddings.token_embedding.weight"] == (49408, 768)
    assert keys["text_model.embeddings.position_embedding.weight"] == (77, 768)
    assert keys["text_model.encoder.layers.11.self_attn.out_proj.bias"] == (768,)
    assert keys["text_model.encoder.layers.0.mlp.fc1.weight"] == (3072, 768)
    assert keys["text_model.final_layer_norm.weight"] == (768,)
    assert len(keys) == 4 + 12 * 16
    assert sum(np.prod(s) for s in keys.values()) == 123_060_480  # CLIP ViT-L/14 text tower


def test_causal_later_tokens_do_not_change_earlier_outputs():
    model, t = load_case("odd3")
    ids = t["input_ids"][:1].copy()
    a = model(ids)
    ids[0, 40:] = (ids[0, 40:] + 1) % model.config.vocab_size
    b = model(ids)
    np.testing.assert_array_equal(a[:, :40], b[:, :40])
    assert not np.allclose(a[:, 40:], b[:, 40:])


def test_shorter_sequence_equals_prefix():
    model, t = load_case("tiny")
    ids = t["input_ids"]
    np.testing.assert_allclose(model(ids[:, :10]), model(ids)[:, :10], rtol=0, atol=1e-5)


def test_bad_ids_raise_input_error():
    model, t = load_case("gelu1")
    with pytest.raises(InputError, match="max_position_embeddings"):
        model(np.zeros((1, 21), np.int64))
    with pytest.raises(InputError, match=r"\[0, 50\)"):
        model(np.array([[0, 50]]))
    with pytest.raises(InputError, match=r"\[0, 50\)"):
        model(np.array([[-1, 3]]))
    with pytest.raises(InputError, match="integer"):
        model(np.zeros((1, 3), np.float32))


def test_load_reports_missing_and_wrong_shapes():
    _, t = load_case("odd3")
    weights = {k: v for k, v in t.items() if k.startswith("text_model.")}
    weights.pop("text_model.final_layer_norm.bias")
    weights["text_model.encoder.layers.0.mlp.fc1.weight"] = np.zeros((5, 5), np.float32)
    cfg = CLIPTextConfig(vocab_size=97, hidden_size=24, intermediate_size=37, num_hidden_layers=3,
                         num_attention_heads=3)
    with pytest.raises(WeightsError) as e:
        nn.load(CLIPTextModel(cfg), weights, what="text encoder")
    assert "final_layer_norm.bias" in str(e.value) and "mlp.fc1.weight" in str(e.value)


def full_size_random_model(seed=0):
    cfg = CLIPTextConfig()
    model = CLIPTextModel(cfg)
    rng = np.random.default_rng(seed)
    weights = {}
    for k, shape in model.parameter_shapes().items():
        if (k.endswith("layer_norm1.weight") or k.endswith("layer_norm2.weight") or
                k.endswith("final_layer_norm.weight")):
            weights[k] = np.ones(shape, np.float32)
        else:
            weights[k] = (0.02 * rng.standard_normal(shape, dtype=np.float32))
    return nn.load(model, weights, what="text encoder")


def test_full_size_random_weights():  # ~6 s here (mostly drawing 123 M random weights): not `slow`
    model = full_size_random_model()
    from minriff.models.tokenizer import CLIPTokenizer, tiny_vocab

    ids = CLIPTokenizer(*tiny_vocab())("jazz piano solo in a smoky club")
    t0 = time.perf_counter()
    out = model(ids)
    print(f"full-size CLIP text encoder, 1x77: {time.perf_counter() - t0:.2f} s")
    assert out.shape == (1, 77, 768)
    assert np.isfinite(out).all()
    # final LayerNorm with unit weight and zero-mean bias: each row ~ zero mean, unit variance
    assert np.abs(out.mean(axis=-1)).max() < 0.1
