"""Hostile and unlucky weights files (issue 13, causes 4, 6, 7 and 8): each cause tested for its
whole class, and every failure a WeightsError (or InputError for a bad argument) naming the problem.

- content sniffing: a safetensors file is told apart from a torch pickle or zip by its structure,
  whatever its header length (1 in 256 real files has the PROTO opcode 0x80 as its low byte);
- zip bombs: compressed storages are checked against their pickle records and a budget before any
  byte is inflated (a 1 MB file inflating to 1 GiB runs in a child with a memory limit);
- configs inside weights files: NaN, infinite, huge, negative, mistyped or unknown values in the
  model and scheduler configs are refused when converting and when loading;
- the compute dtype: only float16/32/64;
- fuzzed files: truncated, bit-flipped headers, huge declared shapes -> WeightsError only.
"""
from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minriff import Riffusion, schedulers, weights
from minriff.configs import TINY
from minriff.errors import ConfigError, InputError, WeightsError
from minriff.rng import Generator
from minriff.weights import convert, sniff, torchpickle
from minriff.weights.format import config_dicts, write_weights
from minriff.weights.safetensors import SafetensorsFile, write_safetensors
from support import FIXTURES

pytestmark = pytest.mark.usefixtures("serial_numba")  # tiny models: thread start-up would dominate

FOLDER = FIXTURES / "weights" / "tiny-diffusers"
CKPT = FIXTURES / "weights" / "tiny-ldm.ckpt"
LEGACY = FIXTURES / "weights" / "tiny-legacy.pt"


# ----------------------------------------------------------------------------- cause 8: content sniffing

F_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "U8": np.uint8, "I8": np.int8}


def _safetensors_bytes(tensors: dict, metadata: dict, header_len: int, lead: str = "") -> bytes:
    """A safetensors file whose header is exactly `header_len` bytes (`lead` + JSON + space padding)."""
    header, offset, data = {}, 0, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    header["__metadata__"] = metadata
    text = (lead + json.dumps(header)).encode()
    assert len(text) <= header_len
    return struct.pack("<Q", header_len) + text + b" " * (header_len - len(text)) + data


@st.composite
def safetensors_files(draw):
    tensors = {}
    for i in range(draw(st.integers(0, 3))):
        dtype = draw(st.sampled_from(sorted(F_DTYPES)))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(F_DTYPES[dtype]).itemsize
        tensors[f"t{i}"] = (dtype, shape, draw(st.binary(min_size=nbytes, max_size=nbytes)))
    metadata = draw(st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=3))
    minimum = len(json.dumps({**{k: {"dtype": d, "shape": s, "data_offsets": [0, 0]} for k, (d, s, _) in
                                 tensors.items()}, "__metadata__": metadata}).encode()) + 64
    # low bytes of the header length: PROTO (0x80, with protocol 2-5 above it), "PK", or anything
    modulus, residue = draw(st.sampled_from([(256, 0x80), (65536, 0x0280), (65536, 0x0480), (65536, 0x4B50),
                                             (1, 0)]))
    n = draw(st.integers(minimum, minimum + 3 * max(modulus, 256)))
    n += (residue - n) % modulus
    return tensors, metadata, n, draw(st.sampled_from(["", "", " ", "\n  "]))


@settings(max_examples=80)
@given(safetensors_files())
@example(({"w": ("F32", [2], b"\x00" * 8)}, {}, 0x280, ""))  # the case: "\x80\x02" then zeros
@example(({"w": ("F32", [2], b"\x00" * 8)}, {}, 0x4B50, ""))  # "PK" as the first two bytes
def test_safetensors_are_sniffed_by_structure_whatever_the_header_length(tmp_path_factory, case):
    tensors, metadata, n, lead = case
    p = tmp_path_factory.mktemp("sn") / "x.safetensors"
    p.write_bytes(_safetensors_bytes(tensors, metadata, n, lead))
    assert sniff.file_kind(p) == "safetensors"
    assert torchpickle.checkpoint_kind(p) is None
    refs, st_file = convert.read_tensor_file(p), SafetensorsFile(p)
    assert set(refs) == set(st_file) == set(tensors)
    for k in tensors:
        assert np.array_equal(np.asarray(refs[k].read()), st_file[k], equal_nan=st_file[k].dtype.kind == "f")


def _converted_with_header_low_byte(tmp_path, low: int):
    """A converted minriff file whose header length ends in byte `low` (the source path's length
    used to decide this, which is how a fresh clone failed test_bad_sources)."""
    cfg = config_dicts(TINY)
    models = weights.random_models("tiny")
    tensors = {c: {k: (tuple(p.shape), lambda p=p: p) for k, p in models[c].named_parameters()}
               for c in ("text_encoder", "unet", "vae")}
    for pad in range(0, 4096, 8):
        out = tmp_path / f"pad{pad}.safetensors"
        write_weights(out, tensors, cfg, source={"path": "x" * pad}, dtype="fp32")
        if struct.unpack("<Q", out.read_bytes()[:8])[0] % 256 == low:
            return out
        out.unlink()
    raise AssertionError("no padding gave that header length")


@pytest.mark.parametrize("low", [0x80, 0x50])
def test_converted_file_with_an_unlucky_header_length_is_recognised(tmp_path, low):
    out = _converted_with_header_low_byte(tmp_path, low)
    assert sniff.file_kind(out) == "safetensors"
    with pytest.raises(WeightsError, match="already a converted minriff file"):
        convert.read_source(out)
    assert weights.WeightsFile(out).config == TINY


@settings(max_examples=30)
@given(st.lists(st.tuples(st.sampled_from([np.float32, np.float16, np.int64]), st.lists(st.integers(0, 3), max_size=3)),
                max_size=4))
def test_torch_files_are_sniffed_as_torch(tmp_path_factory, specs):
    p = tmp_path_factory.mktemp("tz") / "x.ckpt"
    torchpickle.save(p, {f"k{i}": np.zeros(s, dt) for i, (dt, s) in enumerate(specs)})
    assert sniff.file_kind(p) == "zip"
    assert sniff.file_kind(LEGACY) == "legacy" and sniff.file_kind(CKPT) == "zip"


@settings(max_examples=150)
@given(st.sampled_from([b"", b"\x80", b"\x80\x02", b"\x80\x05", b"PK\x03\x04", b"PK", b"{", b"\x08\x00\x00\x00"]),
       st.binary(max_size=300))
def test_any_bytes_are_a_kind_or_a_clear_error(tmp_path_factory, prefix, tail):
    p = tmp_path_factory.mktemp("ab") / "x.bin"
    p.write_bytes(prefix + tail)
    kind = sniff.file_kind(p)
    assert kind in ("safetensors", "zip", "legacy", None)
    try:
        for ref in convert.read_tensor_file(p).values():
            np.asarray(ref.read())
    except WeightsError as e:
        assert str(p) in str(e)


# ----------------------------------------------------------------------------- cause 4: zip bombs


def _zip(path, entries) -> None:
    """A zip written by hand: entries (name, method, raw bytes as stored, uncompressed size, crc), so a
    deflate stream can be given pre-made (and sizes can lie)."""
    out, central = bytearray(), bytearray()
    for name, method, raw, size, crc in entries:
        n = name.encode()
        head = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(raw), size, len(n), 0)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(raw), size,
                               len(n), 0, 0, 0, 0, 0, len(out)) + n
        out += head + n + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))


def _deflated_zeros(nbytes: int, block: int = 1 << 24) -> tuple[bytes, int]:
    """A raw deflate stream of `nbytes` zeros (a multiple of `block`) and its crc32: one compressed
    block, flushed to a byte boundary, repeated (~1 KB per 1 MB), so making it costs no inflating."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    crc, zeros = 0, bytes(block)
    for _ in range(nbytes // block):
        crc = zlib.crc32(zeros, crc)
    return piece * (nbytes // block) + c.flush(), crc


def _stored(name: str, data: bytes):
    return name, zipfile.ZIP_STORED, data, len(data), zlib.crc32(data)


def _deflated(name: str, data: bytes):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return name, zipfile.ZIP_DEFLATED, c.compress(data) + c.flush(), len(data), zlib.crc32(data)


def _bomb(path, nbytes: int = 1 << 30):
    """A torch checkpoint of one float32 tensor whose storage inflates from ~1 MB to `nbytes`."""
    numel = nbytes // 4
    pkl = torchpickle.state_dict_pickle([("w", "FloatStorage", "0", numel, (numel,), (1,))], "state_dict")
    raw, crc = _deflated_zeros(nbytes)
    _zip(path, [_stored("archive/data.pkl", pkl), _stored("archive/byteorder", b"little"),
                ("archive/data/0", zipfile.ZIP_DEFLATED, raw, nbytes, crc)])
    return path


CHILD = """
import resource, sys
import numpy as np
from minriff.errors import WeightsError
from minriff.weights import convert
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (384 << 20), resource.RLIM_INFINITY))
try:
    for ref in convert.read_tensor_file(sys.argv[1]).values():
        np.asarray(ref.read()).sum()
    print("READ")
except WeightsError as e:
    print("WeightsError:", e)
except MemoryError:
    print("MemoryError")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_zip_bomb_is_refused_before_inflating(tmp_path):
    bomb = _bomb(tmp_path / "bomb.ckpt")
    assert bomb.stat().st_size < 2 << 20
    with zipfile.ZipFile(bomb) as z:  # a real bomb: the archive's own directory says 1 GiB
        assert z.getinfo("archive/data/0").file_size == 1 << 30
    out = subprocess.run([sys.executable, "-c", CHILD, str(bomb)], capture_output=True, text=True, timeout=300)
    assert out.stdout.startswith("WeightsError:"), out.stdout + out.stderr
    assert "archive/data/0" in out.stdout and "zip bomb" in out.stdout


def test_compressed_storage_must_match_its_record(tmp_path):
    pkl = torchpickle.state_dict_pickle([("w", "FloatStorage", "0", 4, (4,), (1,))])
    p = tmp_path / "lie.ckpt"
    _zip(p, [_stored("archive/data.pkl", pkl), _deflated("archive/data/0", bytes(64))])  # 64 bytes, record 16
    with pytest.raises(WeightsError, match="archive/data/0 inflates to 64 bytes, but its pickle record declares 16"):
        torchpickle.load(p)
    small = tmp_path / "short.ckpt"  # the directory claims 16 bytes, the stream holds 8
    name, method, raw, _, crc = _deflated("archive/data/0", bytes(8))
    _zip(small, [_stored("archive/data.pkl", pkl), (name, method, raw, 16, crc)])
    with pytest.raises(WeightsError, match="archive/data/0 inflates to 8 bytes"):
        for t in torchpickle.state_dict(torchpickle.load(small)).values():
            np.asarray(t)


@pytest.mark.parametrize("entry", ["archive/data.pkl", "archive/byteorder"])
def test_oversized_metadata_entries_are_refused_before_inflating(tmp_path, entry):
    raw, crc = _deflated_zeros(1 << 30)
    good = {"archive/data.pkl": _stored("archive/data.pkl", torchpickle.state_dict_pickle([])),
            "archive/byteorder": _stored("archive/byteorder", b"little")}
    good[entry] = (entry, zipfile.ZIP_DEFLATED, raw, 1 << 30, crc)
    p = tmp_path / "big.ckpt"
    _zip(p, list(good.values()))
    with pytest.raises(WeightsError, match=f"{entry} declares 1073741824 bytes"):
        torchpickle.load(p)


@settings(max_examples=60)
@given(numel=st.integers(0, 1 << 40), shape_numel=st.integers(0, 1 << 40), declared=st.integers(0, 1 << 40),
       compressed=st.booleans(), real=st.integers(0, 4096))
def test_fuzzed_storage_records_never_inflate_past_the_budget(tmp_path_factory, numel, shape_numel, declared,
                                                               compressed, real):
    """Any numbers in the pickle record and the zip directory: the file reads, or WeightsError, and
    never more is inflated than the budget allows."""
    data = bytes(real)
    pkl = torchpickle.state_dict_pickle([("w", "FloatStorage", "0", numel, (shape_numel,), (1,))])
    name, method, raw, _, crc = _deflated("archive/data/0", data) if compressed else _stored("archive/data/0", data)
    p = tmp_path_factory.mktemp("fz") / "x.ckpt"
    _zip(p, [_stored("archive/data.pkl", pkl), (name, method, raw, min(declared, 2**32 - 1), crc)])
    archive = None
    try:
        archive = torchpickle.TorchZip(p)
        for t in torchpickle.state_dict(archive.load()).values():
            assert np.asarray(t).size == shape_numel
    except WeightsError:
        pass
    if archive is not None:
        assert archive.inflated <= 2 * archive.budget


# ----------------------------------------------------------------------------- cause 6: configs in weights files

HOSTILE = [math.nan, math.inf, -math.inf, 1e308, 10**15, -1, 0, "x", [1, 2], {"a": 1}, True]
SCHEDULER_KEYS = ["num_train_timesteps", "beta_start", "beta_end", "steps_offset", "beta_schedule", "prediction_type",
                  "timestep_spacing", "set_alpha_to_one", "skip_prk_steps", "trained_betas", "clip_sample_range",
                  "solver_order", "_class_name"]
MODEL_KEYS = {"unet": ["block_out_channels", "layers_per_block", "norm_eps", "cross_attention_dim",
                       "attention_head_dim", "norm_num_groups", "sample_size", "freq_shift", "flip_sin_to_cos",
                       "down_block_types"],
              "vae": ["latent_channels", "scaling_factor", "block_out_channels", "norm_num_groups", "act_fn"],
              "text_encoder": ["hidden_size", "layer_norm_eps", "max_position_embeddings", "vocab_size",
                               "num_attention_heads", "hidden_act"]}


def _valid(value, key) -> bool:
    """The few hostile values some keys legitimately accept."""
    if key == "_class_name":
        return isinstance(value, str)
    if key in ("steps_offset", "freq_shift"):
        return value in (0, 1) and not isinstance(value, bool)
    if key in ("set_alpha_to_one", "skip_prk_steps", "flip_sin_to_cos"):
        return value is True
    if key == "attention_head_dim":  # per-block head counts; the tiny model's 8 and 16 channels split either way
        return value == [1, 2]
    return False


def _folder_with(tmp, comp: str, key: str, value):
    dst = tmp / "folder"
    shutil.copytree(FOLDER, dst)
    cfg_path = dst / ("scheduler/scheduler_config.json" if comp == "scheduler" else f"{comp}/config.json")
    cfg = json.loads(cfg_path.read_text())
    cfg[key] = value
    cfg_path.write_text(json.dumps(cfg))  # NaN and Infinity are written as JSON extensions, which json reads
    return dst


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([("scheduler", k) for k in SCHEDULER_KEYS] +
                       [(c, k) for c, keys in MODEL_KEYS.items() for k in keys]), st.sampled_from(HOSTILE))
@example(("scheduler", "num_train_timesteps"), 10**15)  # the "huge values"
@example(("scheduler", "beta_end"), math.nan)  # and NaN
def test_hostile_configs_are_refused_when_converting(tmp_path_factory, where, value):
    comp, key = where
    src = _folder_with(tmp_path_factory.mktemp("cfg"), comp, key, value)
    if _valid(value, key):
        convert.read_source(src)
        return
    with pytest.raises(WeightsError, match=key):
        convert.read_source(src)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "tiny.safetensors"
    convert.convert(FOLDER, out, log=lambda m: None)
    return out


def _rewrite(src, dst, key: str, change):
    f = SafetensorsFile(src)
    meta = dict(f.metadata)
    value = json.loads(meta[key])
    change(value)
    meta[key] = json.dumps(value)
    write_safetensors(dst, [(k, f.shape(k), f.dtype_name(k), lambda k=k: f[k]) for k in f], meta)
    return dst


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([("scheduler", k) for k in SCHEDULER_KEYS] +
                       [(c, k) for c, keys in MODEL_KEYS.items() for k in keys]), st.sampled_from(HOSTILE))
@example(("scheduler", "num_train_timesteps"), 10**15)
@example(("unet", "norm_eps"), math.nan)
def test_hostile_configs_are_refused_when_loading(tmp_path_factory, converted, where, value):
    comp, key = where
    dst = tmp_path_factory.mktemp("ld") / "x.safetensors"
    if comp == "scheduler":
        _rewrite(converted, dst, "scheduler_config", lambda c: c.__setitem__(key, value))
    else:
        _rewrite(converted, dst, "config", lambda c: c[comp].__setitem__(key, value))
    if _valid(value, key):
        weights.load_models(dst)
        return
    with pytest.raises(WeightsError, match=key):
        weights.WeightsFile(dst)
    with pytest.raises(WeightsError, match=key):
        Riffusion.load(dst, quiet=True)


@pytest.mark.filterwarnings("error")  # no overflow or division by zero on the way
@pytest.mark.parametrize("extreme", [
    {"num_train_timesteps": 100_000, "steps_offset": 1, "beta_start": 1e-6, "beta_end": 1e-5},
    {"num_train_timesteps": 4, "beta_start": 0.9, "beta_end": 0.99},
    {"beta_start": 1e-9, "beta_end": 0.03},
    {"trained_betas": [0.02] * 1000},
    {"timestep_spacing": "trailing", "beta_schedule": "linear"},
])
def test_every_scheduler_steps_finitely_from_an_accepted_config(converted, extreme):
    """What the checks let through builds every scheduler, and a step stays finite."""
    cfg = {**weights.WeightsFile(converted).scheduler_config, **extreme}
    schedulers.check_config(cfg)
    x = np.ones((1, 4, 2, 2), np.float32)
    for name in schedulers.NAMES:
        sched = schedulers.make(name, cfg)
        sched.set_timesteps(2)
        t = sched.timesteps[0]
        out = sched.step(np.zeros_like(x), t, np.asarray(sched.scale_model_input(x * sched.init_noise_sigma, t)),
                         generator=Generator(0))
        assert np.all(np.isfinite(out)), name


@pytest.mark.parametrize("hopeless", [{"num_train_timesteps": 100_000}, {"trained_betas": [0.5] * 1000},
                                      {"beta_start": 0.5, "beta_end": 0.9}])
def test_schedules_that_leave_no_signal_are_refused(converted, hopeless):
    cfg = {**weights.WeightsFile(converted).scheduler_config, **hopeless}
    with pytest.raises(ConfigError, match="alpha_cumprod"):
        schedulers.check_config(cfg)


def test_tokenizer_ids_must_fit_the_text_encoder(tmp_path, converted):
    dst = _rewrite(converted, tmp_path / "v.safetensors", "tokenizer_vocab", lambda v: v.__setitem__("jazz", 10**9))
    with pytest.raises(WeightsError, match="tokenizer id 'jazz': 1000000000"):
        weights.WeightsFile(dst).tokenizer()
    src = tmp_path / "folder"
    shutil.copytree(FOLDER, src)
    vocab = json.loads((src / "tokenizer/vocab.json").read_text())
    vocab["jazz"] = -1
    (src / "tokenizer/vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(WeightsError, match="tokenizer id 'jazz': -1"):
        convert.read_source(src)


# ----------------------------------------------------------------------------- cause 7: the compute dtype


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int64, np.bool_, np.complex64, "bfloat16", object, "nonsense"])
def test_non_float_dtypes_are_refused(converted, dtype):
    with pytest.raises(InputError, match="float32 .*float16 or float64"):
        Riffusion.load(converted, dtype=dtype, quiet=True)


@pytest.fixture(scope="module")
def float32_picture(converted):
    return Riffusion.load(converted, quiet=True).generate_spectrogram("jazz", duration_s=0.64, steps=2, seed=3)


def test_default_dtype_is_float32():
    assert weights.compute_dtype(None) == weights.compute_dtype("float32") == np.float32


@pytest.mark.parametrize("dtype", [np.float16, "float64"])
def test_float_dtypes_make_the_same_picture(converted, float32_picture, dtype):
    img = Riffusion.load(converted, dtype=dtype, quiet=True).generate_spectrogram("jazz", duration_s=0.64, steps=2,
                                                                                 seed=3)
    assert img.std() > 1.0  # not a constant image
    assert np.abs(img.astype(int) - float32_picture.astype(int)).mean() < 2.0


# ----------------------------------------------------------------------------- fuzzed files: WeightsError only


def _mutate(buf: bytes, data, header_only: bool) -> bytes:
    b = bytearray(buf)
    op = data.draw(st.sampled_from(["truncate", "flip", "length"]))
    if op == "truncate":
        return bytes(b[: data.draw(st.integers(0, len(b) - 1))])
    if op == "length":  # a different header length, often past the end or inside the JSON
        b[:8] = struct.pack("<Q", data.draw(st.sampled_from([0, 1, 7, 2**63, 2**64 - 1]) | st.integers(0, 1 << 20)))
        return bytes(b)
    end = 8 + struct.unpack("<Q", bytes(b[:8]))[0] if header_only else len(b)
    for _ in range(data.draw(st.integers(1, 8))):
        b[data.draw(st.integers(0, min(end, len(b)) - 1))] = data.draw(st.integers(0, 255))
    return bytes(b)


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_fuzzed_converted_files_raise_only_weights_errors(tmp_path_factory, converted, data):
    p = tmp_path_factory.mktemp("fc") / "x.safetensors"
    p.write_bytes(_mutate(converted.read_bytes(), data, header_only=data.draw(st.booleans())))
    try:
        models = weights.load_models(p)
        models["tokenizer"]("jazz")
    except WeightsError:
        pass


def _huge_shapes(header: dict, data) -> None:
    name = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    header[name]["shape"] = [data.draw(st.sampled_from([2**31, 2**40, 2**62, 10**30]))] * data.draw(st.integers(1, 3))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_huge_declared_shapes_raise_only_weights_errors(tmp_path_factory, converted, data):
    raw = converted.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    _huge_shapes(header, data)
    text = json.dumps(header).encode()
    p = tmp_path_factory.mktemp("hs") / "x.safetensors"
    p.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    with pytest.raises(WeightsError):
        weights.load_models(p)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_fuzzed_torch_checkpoints_raise_only_weights_errors(tmp_path_factory, data):
    """The LDM .ckpt converted with the tiny configs, truncated or with bytes changed anywhere."""
    p = tmp_path_factory.mktemp("ck") / "x.ckpt"
    p.write_bytes(_mutate(CKPT.read_bytes(), data, header_only=False))
    try:
        convert.convert(p, p.with_suffix(".safetensors"), config=FOLDER, log=lambda m: None)
    except WeightsError:
        pass


@pytest.mark.parametrize("key,value", [("layers_per_block", 10**15), ("block_out_channels", 7),
                                       ("scaling_factor", "x")])
def test_hostile_config_folder_for_a_single_file(tmp_path, key, value):
    """`convert x.ckpt --config DIR`: the folder's configs are checked before the key mapping uses them."""
    src = _folder_with(tmp_path, "vae", key, value)
    with pytest.raises(WeightsError, match=key):
        convert.read_source(CKPT, config=src)
