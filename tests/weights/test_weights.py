"""The converted format: safetensors reading/writing (against the safetensors package), header
validation, fuzzing, WeightsFile, load_models, init-random and `minriff info`."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff import weights
from minriff.cli import main as cli_main
from minriff.configs import TINY
from minriff.errors import MinriffError, WeightsError
from minriff.models import init as model_init
from minriff.models import nn
from minriff.weights import safetensors, write_random
from minriff.weights.safetensors import SafetensorsFile, write_safetensors

safetensors_numpy = pytest.importorskip("safetensors.numpy")  # a runtime dependency of minriff

DTYPES = [np.float32, np.float16, np.float64, np.int64, np.int32, np.int8, np.uint8, np.bool_]


def _write(path, tensors: dict, metadata=None):
    write_safetensors(path, [(k, v.shape, safetensors.NAMES[v.dtype], lambda v=v: v) for k, v in tensors.items()],
                      metadata)


def _some_tensors(rng):
    return {"a.weight": rng.standard_normal((3, 5)).astype(np.float32),
            "b": rng.standard_normal(7).astype(np.float16),
            "c.empty": np.zeros((0, 4), np.float32),
            "d.scalar": np.array(2.5, np.float64),
            "e.int": np.arange(12, dtype=np.int64).reshape(3, 4)}


# ----------------------------------------------------------------------------- interop with the safetensors package


@settings(max_examples=25)
@given(st.lists(st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 5), max_size=4)), min_size=1, max_size=6),
       st.integers(0, 2**31))
def test_roundtrip_matches_safetensors_package(tmp_path_factory, specs, seed):
    rng = np.random.default_rng(seed)
    tensors = {f"t{i}": (rng.standard_normal(shape) * 10).astype(dt) for i, (dt, shape) in enumerate(specs)}
    p = tmp_path_factory.mktemp("st") / "x.safetensors"
    _write(p, tensors, {"k": "v"})
    theirs = safetensors_numpy.load_file(str(p))  # the reference reader accepts our file
    ours = SafetensorsFile(p)
    assert ours.metadata == {"k": "v"}
    for k, v in tensors.items():
        assert theirs[k].dtype == v.dtype and np.array_equal(theirs[k], v)
        assert ours[k].dtype == v.dtype and ours[k].shape == v.shape and np.array_equal(ours[k], v)


def test_reads_files_written_by_safetensors_package(tmp_path):
    tensors = _some_tensors(np.random.default_rng(1))
    p = tmp_path / "theirs.safetensors"
    safetensors_numpy.save_file(tensors, str(p), metadata={"x": "1"})
    f = SafetensorsFile(p)
    assert set(f) == set(tensors) and f.metadata == {"x": "1"}
    for k, v in tensors.items():
        assert np.array_equal(f[k], v) and f[k].dtype == v.dtype


def test_bf16_is_widened_to_float32(tmp_path):
    x = np.array([1.0, -2.5, 3.140625, 2.0**100], np.float32)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)  # exact in bf16: low halves are zero
    assert np.array_equal((bits.astype(np.uint32) << 16).view(np.float32), x)
    header = json.dumps({"w": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}).encode()
    p = tmp_path / "bf.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + bits.tobytes())
    got = SafetensorsFile(p)["w"]
    assert got.dtype == np.float32 and np.array_equal(got, x)


def test_tensors_are_memory_mapped_views(tmp_path):
    p = tmp_path / "m.safetensors"
    _write(p, {"w": np.ones((256, 256), np.float32)})
    w = SafetensorsFile(p)["w"]
    assert not w.flags.owndata and not w.flags.writeable


# ----------------------------------------------------------------------------- corrupt files


def _header_file(tmp_path, header, data=b"", raw_len=None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", len(raw) if raw_len is None else raw_len) + raw + data)
    return p


@pytest.mark.parametrize("header,data,raw_len,match", [
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, None, "truncated"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"", 2**40, "exceeds"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"", 500, "truncated"),
    (b"{not json", b"", None, "not valid UTF-8 JSON"),
    (b"\xff\xfe", b"", None, "not valid UTF-8 JSON"),
    ([1, 2], b"", None, "header is an array in JSON, expected an object"),
    ({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "unknown dtype 'Q7'"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 12, None, "needs 12 bytes"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "bad shape"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, None, "bad data_offsets"),
    ({"w": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, None, "needs dtype, shape and data_offsets"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None, "overlap"),
    ({"__metadata__": {"a": 1}}, b"", None, "__metadata__"),
])
def test_corrupt_headers_are_named(tmp_path, header, data, raw_len, match):
    with pytest.raises(WeightsError, match=match):
        SafetensorsFile(_header_file(tmp_path, header, data, raw_len))


def test_not_a_file_and_tiny_files(tmp_path):
    with pytest.raises(WeightsError, match="cannot open"):
        SafetensorsFile(tmp_path / "nope.safetensors")
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(WeightsError, match="too short"):
        SafetensorsFile(tmp_path / "short")
    (tmp_path / "text").write_text("this is a text file, not weights at all\n")
    with pytest.raises(WeightsError):
        SafetensorsFile(tmp_path / "text")


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory):
    p = tmp_path_factory.mktemp("fz") / "ok.safetensors"
    _write(p, _some_tensors(np.random.default_rng(0)), {"format": "x"})
    return p.read_bytes()


@settings(max_examples=200)
@given(data=st.data())
def test_fuzz_corrupted_safetensors_only_raise_minriff_errors(tmp_path_factory, valid_bytes, data):
    buf = bytearray(valid_bytes)
    kind = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    if kind == "truncate":
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] = data.draw(st.integers(0, 255))
    else:
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    p = tmp_path_factory.mktemp("fz") / "x.safetensors"
    p.write_bytes(bytes(buf))
    try:
        f = SafetensorsFile(p)
        for k in f:
            np.asarray(f[k]).sum()
        weights.WeightsFile(p)
    except MinriffError:
        pass


# ----------------------------------------------------------------------------- the converted format


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    write_random(p, "tiny", "fp16", seed=3)
    return p


def test_random_tiny_file_loads_into_models(tiny_file):
    m = weights.load_models(tiny_file)
    assert set(m) >= {"text_encoder", "unet", "vae", "tokenizer", "scheduler_config", "config"}
    assert m["config"].unet == TINY.unet and m["config"].vae == TINY.vae
    ids = m["tokenizer"]("a funky bass line")
    assert ids.shape == (1, 77) and ids[0, 0] == m["tokenizer"].bos_id
    for name in ("text_encoder", "unet", "vae"):  # held as stored (fp16), widened where the ops use them
        for key, p in m[name].named_parameters():
            assert p.dtype == np.float16, key
    assert m["scheduler_config"]["_class_name"] == "PNDMScheduler"
    wide = weights.load_models(tiny_file, dtype=np.float32)
    for name in ("text_encoder", "unet", "vae"):
        for key, p in wide[name].named_parameters():
            assert p.dtype == np.float32, key
            np.testing.assert_array_equal(p, dict(m[name].named_parameters())[key].astype(np.float32))


def test_random_init_values(tiny_file):
    wf = weights.WeightsFile(tiny_file)
    unet = wf.component("unet")
    assert np.all(unet["conv_norm_out.weight"] == 1) and np.all(unet["conv_norm_out.bias"] == 0)
    assert np.all(unet["conv_in.bias"] == 0)
    w = np.concatenate([np.asarray(unet[k], np.float64).ravel() for k in unet if k.endswith("conv1.weight")])
    assert 0.018 < w.std() < 0.022 and abs(w.mean()) < 0.002
    assert all(unet.dtype_name(k) == "F16" for k in unet)


def test_random_is_deterministic_per_seed(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_random(tmp_path / f"{name}.safetensors", "tiny", "fp32", seed=seed)
    a, b, c = (weights.WeightsFile(tmp_path / f"{n}.safetensors").component("vae") for n in "abc")
    k = "decoder.conv_in.weight"
    assert a.dtype_name(k) == "F32"
    assert np.array_equal(a[k], b[k]) and not np.array_equal(a[k], c[k])


def test_load_models_casts_per_tensor_from_fp16(tiny_file):
    m = weights.load_models(tiny_file, dtype=np.float32)
    wf = weights.WeightsFile(tiny_file)
    src = wf.component("text_encoder")["text_model.embeddings.token_embedding.weight"]
    got = m["text_encoder"].text_model.embeddings.token_embedding.weight
    assert got.dtype == np.float32 and np.array_equal(got, src.astype(np.float32))


def test_converted_file_is_a_plain_safetensors_file(tiny_file):
    theirs = safetensors_numpy.load_file(str(tiny_file))
    assert {k.split(".")[0] for k in theirs} == {"text_encoder", "unet", "vae"}
    with open(tiny_file, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n))["__metadata__"]
    assert json.loads(meta["format"]) == "minriff-1"
    assert set(json.loads(meta["config"])) == {"text_encoder", "unet", "vae"}
    assert all(isinstance(v, str) for v in meta.values())


def _rewrite_meta(src, dst, **changes):
    f = SafetensorsFile(src)
    meta = dict(f.metadata)
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    write_safetensors(dst, [(k, f.shape(k), f.dtype_name(k), lambda k=k: f[k]) for k in f], meta)
    return dst


def test_weights_file_errors(tmp_path, tiny_file):
    plain = tmp_path / "plain.safetensors"
    _write(plain, {"w": np.zeros(2, np.float32)})
    with pytest.raises(WeightsError, match="not in minriff's format"):
        weights.WeightsFile(plain)
    torch_style = tmp_path / "pt.safetensors"
    _write(torch_style, {"w": np.zeros(2, np.float32)}, {"format": "pt"})  # what transformers writes
    with pytest.raises(WeightsError, match="not in minriff's format"):
        weights.WeightsFile(torch_style)
    with pytest.raises(WeightsError, match="not supported"):
        weights.WeightsFile(_rewrite_meta(tiny_file, tmp_path / "v9.safetensors", format=json.dumps("minriff-9")))
    with pytest.raises(WeightsError, match="not valid JSON"):
        weights.WeightsFile(_rewrite_meta(tiny_file, tmp_path / "j.safetensors", config="{oops"))
    with pytest.raises(WeightsError, match="lacks 'scheduler_config'"):
        weights.WeightsFile(_rewrite_meta(tiny_file, tmp_path / "s.safetensors", scheduler_config=None))
    bad_cfg = json.dumps({"text_encoder": {}, "vae": {}, "unet": {"in_channels": 9}})
    with pytest.raises(WeightsError, match="in_channels=9"):
        weights.WeightsFile(_rewrite_meta(tiny_file, tmp_path / "c.safetensors", config=bad_cfg))
    with pytest.raises(WeightsError, match="unknown component"):
        weights.WeightsFile(tiny_file).component("safety_checker")


def test_missing_tokenizer_is_explained(tmp_path, tiny_file):
    p = _rewrite_meta(tiny_file, tmp_path / "notok.safetensors", tokenizer_vocab="null", tokenizer_merges="null")
    wf = weights.WeightsFile(p)
    assert not wf.has_tokenizer
    with pytest.raises(WeightsError, match="--tokenizer"):
        wf.tokenizer()
    m = weights.load_models(p)  # the models still load ...
    with pytest.raises(WeightsError, match="no tokenizer"):
        m["tokenizer"]("a prompt")  # ... and the first prompt says what is missing
    with pytest.raises(WeightsError, match="no tokenizer"):
        m["tokenizer"].encode("a prompt")
    with pytest.raises(WeightsError, match="no tokenizer"):
        m["tokenizer"].bos_id  # noqa: B018 - any attribute use must explain what is missing


def test_wrong_shapes_and_keys_reported_all_at_once(tmp_path, tiny_file):
    f = SafetensorsFile(tiny_file)
    drop, grow = "unet.conv_in.bias", "unet.conv_out.bias"
    entries = [(k, f.shape(k) if k != grow else (5,), f.dtype_name(k),
                (lambda k=k: f[k]) if k != grow else (lambda: np.zeros(5, np.float16))) for k in f if k != drop]
    entries.append(("unet.extra.weight", (2,), "F16", lambda: np.zeros(2, np.float16)))
    p = tmp_path / "bad.safetensors"
    write_safetensors(p, entries, f.metadata)
    with pytest.raises(WeightsError) as e:
        weights.load_models(p)
    msg = str(e.value)
    assert "conv_in.bias" in msg and "extra.weight" in msg and "conv_out.bias" in msg
    assert "missing" in msg and "unexpected" in msg and "wrong shape" in msg


def test_info_command(tiny_file, capsys):
    assert cli_main(["info", str(tiny_file)]) == 0
    out = capsys.readouterr().out
    models = model_init.build_models(weights.WeightsFile(tiny_file).config)
    for name in ("text_encoder", "unet", "vae"):
        n = sum(int(np.prod(s)) for s in models[name].parameter_shapes().values())
        assert f"{n:,d}" in out
    assert "F16" in out and "random" in out and "minriff-1" in out
    assert cli_main(["info", str(tiny_file), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["components"]["vae"]["dtypes"] == ["F16"] and js["source"]["type"] == "random"


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "x.safetensors").write_bytes(b"\x00" * 3)
    assert cli_main(["info", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("minriff info: error:") and "\n" not in err


def test_init_random_cli(tmp_path):
    out = tmp_path / "r.safetensors"
    assert cli_main(["init-random", "--config", "tiny", "-o", str(out), "--dtype", "fp32", "--seed", "5"]) == 0
    wf = weights.WeightsFile(out)
    assert wf.source["seed"] == 5 and wf.component("unet").dtype_name("conv_in.weight") == "F32"
    nn.load(model_init.build_models(wf.config)["unet"], wf.component("unet"), what="unet")


@settings(max_examples=100)
@given(data=st.data())
def test_fuzz_converted_file_headers_only_raise_minriff_errors(tmp_path_factory, tiny_file, data):
    """Corrupt the JSON header (configs, vocabulary, offsets) of a real converted file."""
    buf = bytearray(tiny_file.read_bytes())
    n = struct.unpack("<Q", buf[:8])[0]
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(8, 8 + n - 1))
        buf[i] = data.draw(st.sampled_from(b'{}[]",:0123456789-.eE tfnul\\x'))
    p = tmp_path_factory.mktemp("fzh") / "x.safetensors"
    p.write_bytes(bytes(buf))
    try:
        wf = weights.WeightsFile(p)
        wf.summary()
        wf.tokenizer()("a funky bass line")
        weights.load_models(p)
    except MinriffError:
        pass


_json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 70000) | st.floats(allow_nan=False) |
                            st.text(max_size=5),
                            lambda inner: st.lists(inner, max_size=4), max_leaves=6)


@settings(max_examples=60)
@given(data=st.data())
def test_fuzz_stored_configs_only_raise_minriff_errors(tmp_path_factory, tiny_file, data):
    """Well-formed JSON, wrong values: a changed config field must load or fail with a minriff error."""
    meta = SafetensorsFile(tiny_file).metadata
    config = json.loads(meta["config"])
    comp = data.draw(st.sampled_from(sorted(config)))
    key = data.draw(st.sampled_from(sorted(config[comp])))
    config[comp][key] = data.draw(_json_values)
    p = _rewrite_meta(tiny_file, tmp_path_factory.mktemp("fzc") / "c.safetensors", config=json.dumps(config))
    try:
        weights.load_models(p)
    except MinriffError:
        pass


@pytest.mark.parametrize("value, kind", [([1, 2], "an array"), (None, "null"), ("unet", "a string"), (7, "a number")])
def test_a_config_that_is_not_an_object_is_named_in_json_words(value, kind):
    from minriff.configs import UNetConfig

    with pytest.raises(MinriffError, match=f"UNet config must be a JSON object, got {kind}"):
        UNetConfig.from_dict(value)


# ----------------------------------------------------------------------------- init_random / random_models


def _nan_filled(module):
    """Every parameter NaN first, so a parameter init_random skips cannot pass as 'set'."""
    return module.apply_to_parameters(lambda p: np.full(p.shape, np.nan, np.float32))


def _tiny_unet():
    from minriff.models.unet import UNet2DConditionModel

    return _nan_filled(UNet2DConditionModel(TINY.unet))


@pytest.mark.parametrize("pool_size", [model_init.POOL_SIZE, 5000])  # 5000: windows of a shared pool
def test_init_random_is_deterministic_per_seed(pool_size):
    a, b, c = (dict(model_init.init_random(_tiny_unet(), seed=s, pool_size=pool_size).named_parameters())
               for s in (1, 1, 2))
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    differ = [key for key in a if not np.array_equal(a[key], c[key])]
    assert len(differ) == len(a)


@pytest.mark.parametrize("pool_size", [model_init.POOL_SIZE, 5000])
def test_init_random_sets_every_parameter(pool_size):
    from minriff.models.clip import CLIPTextModel
    from minriff.models.vae import AutoencoderKL

    for module in (_tiny_unet(), _nan_filled(CLIPTextModel(TINY.text_encoder)), _nan_filled(AutoencoderKL(TINY.vae))):
        model_init.init_random(module, seed=0, pool_size=pool_size)
        for key, p in module.named_parameters():
            assert p.dtype == np.float32 and np.isfinite(p).all(), key
            assert np.count_nonzero(p) == p.size, key  # normals are never exactly 0


def test_init_random_scales_by_fan_in():
    unet = model_init.init_random(_tiny_unet(), seed=0)
    checked = 0
    for key, p in unet.named_parameters():
        if p.ndim >= 2 and p.size >= 2000:
            fan_in = p.size // p.shape[0]  # Linear (out, in): in; Conv2d (out, in, kh, kw): in·kh·kw
            assert abs(p.std() * np.sqrt(fan_in) - 1) < 0.1, (key, p.shape, p.std())
            assert abs(p.mean()) * np.sqrt(fan_in) < 0.1, key
            checked += 1
        elif p.ndim == 1 and key.endswith("bias"):
            assert np.abs(p).max() < 0.5, key
    assert checked >= 10
    norms = np.concatenate([p for k, p in unet.named_parameters() if k.endswith("norm1.weight")])
    assert abs(norms.mean() - 1) < 0.02 and 0.03 < norms.std() < 0.07
    biases = np.concatenate([p for k, p in unet.named_parameters() if k.endswith("bias")])
    assert abs(biases.mean()) < 0.005 and 0.04 < biases.std() < 0.06
    # a fixed std instead of fan-in scaling
    conv = model_init.init_random(_tiny_unet(), seed=0, std=0.02).down_blocks[0].resnets[0].conv1.weight
    assert abs(conv.std() - 0.02) < 0.003


def test_random_models_is_a_runnable_model_dict(tiny_file):
    m = model_init.random_models("tiny", seed=0)
    loaded = weights.load_models(tiny_file)
    assert set(m) == set(loaded)
    assert m["config"] == model_init.random_models(TINY)["config"] == loaded["config"]
    for name in ("text_encoder", "unet", "vae"):
        assert m[name].parameter_shapes() == loaded[name].parameter_shapes()
    assert m["scheduler_config"] == loaded["scheduler_config"]
    ids = m["tokenizer"]("a funky bass line")
    assert np.array_equal(ids, loaded["tokenizer"]("a funky bass line"))
    states = m["text_encoder"](ids)
    assert states.shape == (1, 77, TINY.text_encoder.hidden_size) and np.isfinite(states).all()


def test_random_models_per_seed():
    a, b, c = (model_init.random_models("tiny", seed=s) for s in (4, 4, 5))
    key = "decoder.conv_in.weight"
    assert np.array_equal(a["vae"].decoder.conv_in.weight, b["vae"].decoder.conv_in.weight), key
    assert not np.array_equal(a["vae"].decoder.conv_in.weight, c["vae"].decoder.conv_in.weight), key
    # each component draws its own stream: the first values of the three pools differ
    firsts = [next(iter(a[n].named_parameters()))[1].ravel()[:4] for n in ("text_encoder", "unet", "vae")]
    assert all(not np.allclose(firsts[i], firsts[j]) for i in range(3) for j in range(i))


@pytest.mark.parametrize("config,match", [("medium", "unknown config preset 'medium'"),
                                          (42, "must be a ModelConfig or a preset name")])
def test_random_models_bad_config(config, match):
    from minriff.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        model_init.random_models(config)
