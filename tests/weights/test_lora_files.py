"""Reading LoRA files (minriff/weights/lora.py, lora_names.py): every format resolves to the same
layers and numbers, the LDM name table inverts convert.ldm_unet_key, and anything unsupported or
malformed is a WeightsError naming the key (hypothesis draws the corruptions and byte damage)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minriff.configs import PRESETS
from minriff.errors import WeightsError
from minriff.weights import torchpickle
from minriff.weights.convert import ldm_unet_key
from minriff.weights.lora import read_lora
from minriff.weights.lora_names import Targets, ldm_unet_path
from support.lora_cases import (
    kohya_name,
    layer_shapes,
    pairs,
    random_kohya,
    save,
    tiny_riff,
    to_old_diffusers,
    to_peft,
)


@pytest.fixture(scope="module")
def riff():
    return tiny_riff()


@pytest.fixture(scope="module")
def targets(riff):
    return Targets({"text_encoder": riff.text_encoder, "unet": riff.unet})


@pytest.fixture(scope="module")
def shapes(riff):
    return layer_shapes(riff)


def by_layer(lora) -> dict:
    """(component, module) -> (down, up, alpha) of a read file."""
    return {(la.target.component, la.target.module): (la.down, la.up, la.alpha) for la in lora.layers}


def test_layer_shapes_cover_every_locon_kind(shapes):
    kinds = {m.split(".")[-1] if not m.endswith("to_out.0") else "to_out.0" for _, m in shapes}
    assert kinds >= {"to_q", "to_k", "to_v", "to_out.0", "proj", "2", "proj_in", "proj_out", "conv1", "conv2",
                     "time_emb_proj", "conv_shortcut", "conv", "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    assert any("downsamplers" in m for _, m in shapes) and any("upsamplers" in m for _, m in shapes)


def test_kohya_reads_every_layer_with_its_alpha(tmp_path, targets, shapes):
    sd = random_kohya(shapes, alpha=lambda c, m: 1.0 + len(m) % 5)
    lora = read_lora(save(tmp_path / "k.safetensors", sd), targets)
    assert lora.format == "kohya" and not lora.skipped
    got = by_layer(lora)
    assert set(got) == set(shapes)
    for (comp, module), (down, up, alpha) in got.items():
        key = kohya_name(comp, module)
        assert np.array_equal(down, sd[key + ".lora_down.weight"]) and np.array_equal(up, sd[key + ".lora_up.weight"])
        assert alpha == 1.0 + len(module) % 5
    assert lora.parameters == sum(v.size for k, v in sd.items() if not k.endswith(".alpha"))
    assert lora.counts() == {"unet": sum(c == "unet" for c, _ in shapes), "text_encoder": 12}


def test_missing_alpha_is_rank_and_zero_alpha_means_unset(tmp_path, targets, shapes):
    sd = random_kohya(shapes, rank=3)
    first = kohya_name(*sorted(shapes)[0])
    sd[first + ".alpha"] = np.array(0.0, np.float32)  # kohya-ss' loader: alpha 0 -> rank
    layers = read_lora(save(tmp_path / "k.safetensors", sd), targets).layers
    assert all(la.alpha == la.rank and la.scale == 1.0 for la in layers)


def test_peft_metadata_alphas_and_transformers5_names(tmp_path, targets, shapes):
    sd = random_kohya(shapes, alpha=lambda c, m: 2.0 + len(m) % 3)
    ref = by_layer(read_lora(save(tmp_path / "k.safetensors", sd), targets))
    for prefix in (True, False):
        peft, meta = to_peft(sd, shapes, text_model_prefix=prefix)
        lora = read_lora(save(tmp_path / f"p{prefix}.safetensors", peft, meta), targets)
        assert lora.format == "peft"
        _same(by_layer(lora), ref)


def test_peft_without_metadata_uses_rank_and_global_alpha(tmp_path, targets, shapes):
    peft, _ = to_peft(random_kohya(shapes, rank=2), shapes)
    assert all(la.alpha == 2 for la in read_lora(save(tmp_path / "a.safetensors", peft), targets).layers)
    meta = {"lora_adapter_metadata": json.dumps({"unet.lora_alpha": 8, "unet.use_rslora": True,
                                                 "text_encoder.lora_alpha": 3,
                                                 "text_encoder.alpha_pattern": {"fc1": 6}})}
    for la in read_lora(save(tmp_path / "b.safetensors", peft, meta), targets).layers:
        if la.target.component == "unet":
            assert la.alpha == 8 and la.scale == pytest.approx(8 / np.sqrt(2))  # rsLoRA: alpha / sqrt(rank)
        else:
            assert la.alpha == (6 if la.target.module.endswith("fc1") else 3) and la.scale == la.alpha / 2


def test_old_diffusers_names_with_and_without_prefix(tmp_path, targets, shapes):
    sd = random_kohya(shapes, alpha=lambda c, m: 1.5 + len(m) % 4)
    ref = by_layer(read_lora(save(tmp_path / "k.safetensors", sd), targets))
    for prefix in (True, False):
        old = to_old_diffusers(sd, shapes, unet_prefix=prefix)
        assert any(".processor.to_q_lora." in k for k in old) and any(".lora_linear_layer." in k for k in old)
        lora = read_lora(save(tmp_path / f"o{prefix}.safetensors", old), targets)
        _same(by_layer(lora), ref)


def test_torch_bin_reads_like_safetensors(tmp_path, targets, shapes):
    sd = random_kohya(shapes, alpha=lambda c, m: 2.0)
    ref = by_layer(read_lora(save(tmp_path / "k.safetensors", sd), targets))
    torchpickle.save(tmp_path / "k.bin", sd)
    _same(by_layer(read_lora(tmp_path / "k.bin", targets)), ref)


def test_fp16_and_bf16_matrices(tmp_path, targets, shapes):
    sd = random_kohya(shapes, dtype=np.float16)
    layers = read_lora(save(tmp_path / "h.safetensors", sd), targets).layers
    assert all(la.down.dtype == np.float16 for la in layers)
    # bf16 written by hand: the top 16 bits of float32
    one = kohya_name(*sorted(shapes)[0])
    down = sd[one + ".lora_down.weight"].astype(np.float32)
    raw = (down.view(np.uint32) >> 16).astype(np.uint16)
    header = {one + ".lora_down.weight": {"dtype": "BF16", "shape": list(down.shape), "data_offsets": [0, raw.nbytes]}}
    up = sd[one + ".lora_up.weight"].astype(np.float32)
    header[one + ".lora_up.weight"] = {"dtype": "F32", "shape": list(up.shape),
                                       "data_offsets": [raw.nbytes, raw.nbytes + up.nbytes]}
    blob = json.dumps(header).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + raw.tobytes() + up.tobytes())
    (la,) = read_lora(path, targets).layers
    assert la.down.dtype == np.float32 and np.array_equal(la.down, (raw.astype(np.uint32) << 16).view(np.float32))


def _same(got: dict, ref: dict):
    assert set(got) == set(ref)
    for key, (down, up, alpha) in ref.items():
        assert np.array_equal(got[key][0], down) and np.array_equal(got[key][1], up) and got[key][2] == alpha, key


# ----------------------------------------------------------------------------- LDM names


@pytest.mark.parametrize("preset", ["sd15", "tiny"])
def test_ldm_names_invert_the_converter(preset):
    """Every UNet layer with an LDM name maps back to itself through convert.ldm_unet_key (the
    converter that reads original checkpoints), and every LoRA-trainable layer has one."""
    targets = Targets.for_config(PRESETS[preset])
    from minriff.models.init import build_models

    unet = build_models(PRESETS[preset])["unet"]
    named = 0
    for (comp, module), _ in targets.layers.items():
        if comp != "unet":
            continue
        ldm = ldm_unet_path(module, unet)
        assert ldm is not None, module
        assert ldm_unet_key(ldm + ".weight", unet.config.layers_per_block) == module + ".weight"
        named += 1
    assert named == sum(c == "unet" for c, _ in targets.layers)


def test_ldm_named_kohya_file(tmp_path, riff, targets, shapes):
    sd = random_kohya(shapes, alpha=lambda c, m: 3.0)
    ref = by_layer(read_lora(save(tmp_path / "k.safetensors", sd), targets))
    renamed = {}
    for k, v in sd.items():
        name, _, tail = k.partition(".")
        for (comp, module) in shapes:
            if kohya_name(comp, module) == name and comp == "unet":
                name = "lora_unet_" + ldm_unet_path(module, riff.unet).replace(".", "_")
        renamed[f"{name}.{tail}"] = v
    assert any(k.startswith("lora_unet_input_blocks_") for k in renamed)
    assert any(k.startswith("lora_unet_output_blocks_") and "_conv." in k for k in renamed)  # the upsampler
    _same(by_layer(read_lora(save(tmp_path / "ldm.safetensors", renamed), targets)), ref)


# ----------------------------------------------------------------------------- refused files

UNSUPPORTED = {
    "LoHa": [".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b"],
    "LoKr": [".lokr_w1", ".lokr_w2"],
    "DoRA": [".dora_scale"],
    "IA3": [".on_input"],
    "OFT": [".oft_blocks"],
    "lora_mid": [".lora_mid.weight"],
    "diff": [".diff"],
}


@pytest.mark.parametrize("kind", sorted(UNSUPPORTED))
def test_unsupported_types_are_named(tmp_path, targets, shapes, kind):
    sd = random_kohya(shapes)
    name = kohya_name(*sorted(shapes)[0])
    for tail in UNSUPPORTED[kind]:
        sd[name + tail] = np.ones((2, 2), np.float32)
    with pytest.raises(WeightsError, match=f"unsupported LoRA type .*{kind}") as e:
        read_lora(save(tmp_path / "u.safetensors", sd), targets)
    assert name + UNSUPPORTED[kind][0] in str(e.value)


def test_peft_dora_and_sdxl_are_refused(tmp_path, targets, shapes):
    peft, _ = to_peft(random_kohya(shapes), shapes)
    key = next(k for k in peft if k.endswith("lora_A.weight")).replace("lora_A.weight", "lora_magnitude_vector")
    with pytest.raises(WeightsError, match="unsupported LoRA type DoRA.*lora_magnitude_vector"):
        read_lora(save(tmp_path / "d.safetensors", {**peft, key: np.ones(4, np.float32)}), targets)
    meta = {"lora_adapter_metadata": json.dumps({"unet.use_dora": True})}
    with pytest.raises(WeightsError, match="DoRA"):
        read_lora(save(tmp_path / "d2.safetensors", peft, meta), targets)
    sdxl = {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": np.ones((2, 16), np.float32)}
    with pytest.raises(WeightsError, match="SDXL.*lora_te1_text_model"):
        read_lora(save(tmp_path / "x.safetensors", sdxl), targets)


def test_unknown_keys_error_or_warn(tmp_path, targets, shapes):
    sd = random_kohya(shapes)
    sd["lora_unet_no_such_layer.lora_down.weight"] = np.ones((2, 8), np.float32)
    sd["something_else"] = np.ones(3, np.float32)
    path = save(tmp_path / "k.safetensors", sd)
    with pytest.raises(WeightsError, match="2 keys match no layer.*lora_unet_no_such_layer.*something_else"):
        read_lora(path, targets)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lora = read_lora(path, targets, strict=False)
    assert sorted(lora.skipped) == ["lora_unet_no_such_layer.lora_down.weight", "something_else"]
    assert len(lora.layers) == len(shapes) and "2 keys match no layer" in str(caught[0].message)


def test_a_lora_for_another_model_says_so(tmp_path, targets, shapes):
    (comp, module), shape = sorted(shapes.items())[0]
    name = kohya_name(comp, module)
    sd = {name + ".lora_down.weight": np.ones((4, shape[1] * 2, *shape[2:]), np.float32),
          name + ".lora_up.weight": np.ones((shape[0], 4, *((1, 1) if len(shape) == 4 else ())), np.float32)}
    with pytest.raises(WeightsError, match=f"{name}.lora_down.weight .* do not fit .*another model"):
        read_lora(save(tmp_path / "o.safetensors", sd), targets)


# the corruptions the fuzz test draws: name -> f(sd, key of a layer, rng) -> (new sd, text the error must contain)
def _rank(sd, name, rng):
    up = sd[name + ".lora_up.weight"]
    sd[name + ".lora_up.weight"] = np.concatenate([up, up[:, :1]], axis=1)
    return sd, name + ".lora_up.weight"


def _half(sd, name, rng):
    gone = rng.choice([".lora_down.weight", ".lora_up.weight"])
    del sd[name + gone]
    kept = ".lora_up.weight" if gone == ".lora_down.weight" else ".lora_down.weight"
    return sd, name + kept


def _alpha(value):
    def corrupt(sd, name, rng):
        sd[name + ".alpha"] = np.array(value, np.float32)
        return sd, name + ".alpha"
    return corrupt


def _dtype(sd, name, rng):
    which = name + rng.choice([".lora_down.weight", ".lora_up.weight"])
    sd[which] = (sd[which] * 100).astype(rng.choice([np.int32, np.int8, np.uint8]))
    return sd, which


def _nan(sd, name, rng):
    which = name + ".lora_down.weight"
    sd[which] = sd[which].copy()
    sd[which].flat[int(rng.integers(sd[which].size))] = rng.choice([np.nan, np.inf, -np.inf])
    return sd, which


def _shape(sd, name, rng):
    which = name + ".lora_down.weight"
    sd[which] = sd[which][:, :-1]
    return sd, which


def _alpha_shape(sd, name, rng):
    sd[name + ".alpha"] = np.ones(3, np.float32)
    return sd, name + ".alpha"


def _duplicate(sd, name, rng):
    sd[name + ".lora_A.weight"] = sd[name + ".lora_down.weight"]
    return sd, name


def _orphan_alpha(sd, name, rng):
    del sd[name + ".lora_down.weight"], sd[name + ".lora_up.weight"]
    sd[name + ".alpha"] = np.array(2.0, np.float32)
    return sd, name + ".alpha"


CORRUPTIONS = {"rank": _rank, "half": _half, "alpha_nan": _alpha(np.nan), "alpha_negative": _alpha(-1.0),
               "alpha_inf": _alpha(np.inf), "dtype": _dtype, "nan": _nan, "shape": _shape,
               "alpha_shape": _alpha_shape, "duplicate": _duplicate, "orphan_alpha": _orphan_alpha}


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(CORRUPTIONS)), layer=st.integers(0, 10_000), seed=st.integers(0, 2**16))
def test_fuzzed_corruptions_name_the_key(tmp_path_factory, targets, shapes, kind, layer, seed):
    rng = np.random.default_rng(seed)
    sd = random_kohya(shapes, seed=seed % 7, alpha=lambda c, m: 2.0)
    name = kohya_name(*sorted(shapes)[layer % len(shapes)])
    sd, must_name = CORRUPTIONS[kind](sd, name, rng)
    path = save(tmp_path_factory.mktemp("fuzz") / "bad.safetensors", sd)
    with pytest.raises(WeightsError) as e:
        read_lora(path, targets)
    assert must_name in str(e.value), (kind, str(e.value))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_bytes_never_escape_as_other_errors(tmp_path_factory, targets, shapes, data):
    """Truncation anywhere, or flipped bytes: a WeightsError or a file that reads; nothing else."""
    small = dict(list(sorted(shapes.items()))[:6])
    blob = save(tmp_path_factory.mktemp("raw") / "ok.safetensors", random_kohya(small, alpha=lambda c, m: 2.0))
    raw = bytearray(blob.read_bytes())
    if data.draw(st.booleans(), "truncate"):
        cut = data.draw(st.integers(0, len(raw) - 1), "cut")
        raw = raw[:cut]
    else:
        for _ in range(data.draw(st.integers(1, 8), "flips")):
            raw[data.draw(st.integers(0, len(raw) - 1), "at")] ^= data.draw(st.integers(1, 255), "bits")
    blob.write_bytes(bytes(raw))
    try:
        lora = read_lora(blob, targets, strict=data.draw(st.booleans(), "strict"))
    except WeightsError as e:
        assert str(blob) in str(e)
        return
    assert all(np.isfinite(la.down).all() and np.isfinite(la.up).all() and la.alpha >= 0 for la in lora.layers)


def test_truncated_data_names_the_tensor(tmp_path, targets, shapes):
    sd = random_kohya(dict(list(sorted(shapes.items()))[:3]))
    path = save(tmp_path / "t.safetensors", sd)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(WeightsError, match="truncated") as e:
        read_lora(path, targets)
    assert any(k in str(e.value) for k in sd)


def test_not_a_file(tmp_path, targets):
    with pytest.raises(WeightsError, match="not found"):
        read_lora(tmp_path / "nope.safetensors", targets)
    with pytest.raises(WeightsError, match="not a file"):
        read_lora(tmp_path, targets)
    (tmp_path / "junk.safetensors").write_bytes(b"hello, world! this is not a LoRA")
    with pytest.raises(WeightsError):
        read_lora(tmp_path / "junk.safetensors", targets)


def test_pairs_helper_sees_every_layer(shapes):
    assert len(pairs(random_kohya(shapes))) == len(shapes)


def test_off_heap_copies_give_their_memory_back():
    """Kept originals and LoRA matrices live in their own memory maps: freeing one returns its pages
    at once (malloc's heap, where minriff keeps big arrays, would keep them)."""
    from minriff.bench.lora import rss_mb
    from minriff.weights.lora import off_heap

    src = np.arange(64 * 2**20, dtype=np.float32).reshape(2**13, -1)  # 256 MB
    before = rss_mb()
    half = off_heap(src, np.float16)
    assert half.dtype == np.float16 and not half.flags.writeable
    assert np.array_equal(half[:3, :5], src[:3, :5].astype(np.float16))
    held = rss_mb()
    del half
    assert held - before > 100 and held - rss_mb() > 100  # 128 MB in, and out again
