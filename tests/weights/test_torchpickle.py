"""Reading torch checkpoints without torch: round trips through minriff's writer, hostile pickles
(nothing may execute), corrupt archives (only minriff errors), the committed torch-written fixture,
and a live comparison with torch (oracle)."""
from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff.errors import MinriffError, UnsafePickleError, WeightsError
from minriff.weights import torchpickle
from support import FIXTURES, oracle


def _roundtrip(tmp_path, tensors, **kw):
    p = tmp_path / "x.ckpt"
    torchpickle.save(p, tensors, **kw)
    return torchpickle.state_dict(torchpickle.load(p), str(p))


@settings(max_examples=30)
@given(st.lists(st.tuples(st.sampled_from([np.float32, np.float16, np.float64, np.int64, np.int32, np.uint8]),
                          st.lists(st.integers(0, 4), max_size=4)), min_size=1, max_size=5),
       st.booleans())
def test_roundtrip_own_writer(tmp_path_factory, specs, wrap):
    rng = np.random.default_rng(0)
    tensors = {f"k{i}": (rng.standard_normal(s) * 50).astype(dt) for i, (dt, s) in enumerate(specs)}
    got = _roundtrip(tmp_path_factory.mktemp("rt"), tensors, wrap_key="state_dict" if wrap else None)
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        a = np.asarray(got[k])
        assert got[k].shape == v.shape and a.dtype == v.dtype and np.array_equal(a, v)


def test_fixture_written_by_torch():
    """tiny-ldm.ckpt was written by torch.save (make_weights.py): a zip with a `{"state_dict": ...,
    "global_step": int}` pickle, 64-byte aligned storages, int64 buffers, float64 schedules."""
    obj = torchpickle.load(FIXTURES / "weights" / "tiny-ldm.ckpt")
    assert obj["global_step"] == 10
    sd = torchpickle.state_dict(obj)
    betas = np.asarray(sd["betas"])
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert np.allclose(betas, np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2)  # as make_weights wrote it
    pos = np.asarray(sd["cond_stage_model.transformer.text_model.embeddings.position_ids"])
    assert pos.dtype == np.int64 and np.array_equal(pos, np.arange(77)[None])
    ema = (np.asarray(sd["model_ema.diffusion_modelconv_inweight"])
           if "model_ema.diffusion_modelconv_inweight" in sd else None)
    w = np.asarray(sd["model.diffusion_model.input_blocks.0.0.weight"])
    assert np.array_equal(np.asarray(sd["model_ema.diffusion_modelinput_blocks00weight"]), -w) and ema is None


LEGACY = FIXTURES / "weights" / "tiny-legacy.pt"


def test_legacy_format_fixture():
    """tiny-legacy.pt: see make_weights.legacy_example for how torch wrote it."""
    obj = torchpickle.load(LEGACY)
    assert obj["epoch"] == 2
    sd = torchpickle.state_dict(obj)
    assert np.array_equal(np.asarray(sd["grid"]), np.arange(12, dtype=np.float32).reshape(3, 4))
    assert np.array_equal(np.asarray(sd["tail"]), np.arange(8, 12, dtype=np.float32))
    half = np.asarray(sd["half"])
    assert half.dtype == np.float16 and np.array_equal(half, np.linspace(-1, 1, 5).astype(np.float16))
    bf = np.asarray(sd["bf16"])
    assert bf.dtype == np.float32 and np.array_equal(bf, [1.0, -2.0, 0.5])
    assert np.array_equal(np.asarray(sd["ids"]), np.arange(4))


def _corrupt(good: bytes, data) -> bytes:
    """`good` cut short at a drawn length, or with 1-10 drawn bytes overwritten."""
    buf = bytearray(good)
    if data.draw(st.booleans()):
        return bytes(buf[: data.draw(st.integers(0, len(buf) - 1))])
    for _ in range(data.draw(st.integers(1, 10))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    return bytes(buf)


def _read_every_tensor_or_minriff_error(path):
    try:
        for t in torchpickle.state_dict(torchpickle.load(path)).values():
            np.asarray(t).sum()
    except MinriffError:
        pass


@settings(max_examples=100)
@given(data=st.data())
def test_fuzz_corrupt_legacy_files_only_raise_minriff_errors(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("lg") / "x.pt"
    p.write_bytes(_corrupt(LEGACY.read_bytes(), data))
    _read_every_tensor_or_minriff_error(p)


# ----------------------------------------------------------------------------- hostile pickles


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_payloads(marker):
    cmd = f"touch {marker}".encode()
    yield "os.system via REDUCE", pickle.dumps({"state_dict": {"w": _Evil(marker)}}, protocol=2)
    yield "protocol 4 STACK_GLOBAL", pickle.dumps(_Evil(marker), protocol=4)
    yield "hand-written GLOBAL posix.system", b"cposix\nsystem\n(V" + cmd + b"\ntR."
    yield "builtins.eval", b"cbuiltins\neval\n(V__import__('os').system('" + cmd + b"')\ntR."
    yield "builtins.exec", b"c__builtin__\nexec\n(V__import__('os').system('" + cmd + b"')\ntR."
    yield "torch.storage._load_from_bytes", b"ctorch.storage\n_load_from_bytes\n(C\x00tR."
    yield "dotted attribute path", b"\x80\x04\x8c\x0bcollections\x8c\x14OrderedDict.__init__\x93."
    yield "copyreg extension", b"\x80\x02\x82\x01."


def _as_archive(tmp_path, payload: bytes):
    p = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")
    return p


def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "PWNED"
    for what, payload in _evil_payloads(marker):
        with pytest.raises(WeightsError) as e:
            torchpickle.load(_as_archive(tmp_path, payload))
        assert not marker.exists(), what
        if what.startswith("os.system"):
            assert (isinstance(e.value, UnsafePickleError) and
                    ("posix.system" in str(e.value) or "os.system" in str(e.value)))
        with pytest.raises(WeightsError):
            torchpickle.unpickle(payload)
        assert not marker.exists(), what


def test_inert_mode_still_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    for what, payload in _evil_payloads(marker):
        try:
            torchpickle.load(_as_archive(tmp_path, payload), inert_unknown=True)
        except WeightsError:
            pass
        assert not marker.exists(), what
    obj = torchpickle.unpickle(pickle.dumps({"cfg": _Evil(marker)}, protocol=2), inert_unknown=True)
    assert isinstance(obj["cfg"], torchpickle.Opaque) and obj["cfg"].name in ("posix.system", "os.system")
    assert not marker.exists()


def test_refusal_names_the_global(tmp_path):
    with pytest.raises(UnsafePickleError, match=r"torch\.storage\._load_from_bytes"):
        torchpickle.unpickle(b"ctorch.storage\n_load_from_bytes\n(C\x00tR.")
    with pytest.raises(UnsafePickleError, match=r"builtins\.getattr"):
        torchpickle.unpickle(b"cbuiltins\ngetattr\n.")


def test_inert_lightning_and_numpy_globals_are_recorded_not_run():
    """Real SD .ckpt files carry these outside the state dict; they become inert records."""
    payload = (b"\x80\x02}(X\t\x00\x00\x00callbacks}c"
               b"pytorch_lightning.callbacks.model_checkpoint\nModelCheckpoint\n}sX\x04\x00\x00\x00step"
               b"cnumpy.core.multiarray\nscalar\ncnumpy\ndtype\nX\x02\x00\x00\x00i8K\x00K\x01\x87R"
               b"c_codecs\nencode\nX\x08\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00X\x06\x00\x00\x00latin1\x86R\x86Ru.")
    obj = torchpickle.unpickle(payload)
    assert isinstance(obj["step"], torchpickle.Opaque) and obj["step"].name == "numpy.core.multiarray.scalar"
    (cls, state), = obj["callbacks"].items()
    assert isinstance(cls, torchpickle.OpaqueGlobal) and state == {}


# ----------------------------------------------------------------------------- corrupt archives


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory):
    p = tmp_path_factory.mktemp("g") / "good.ckpt"
    rng = np.random.default_rng(0)
    torchpickle.save(p, {"a": rng.standard_normal((4, 3)).astype(np.float32),
                         "b": np.arange(5, dtype=np.int64), "c": rng.standard_normal(6).astype(np.float16)},
                     wrap_key="state_dict")
    return p.read_bytes()


def _data_pkl(buf: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(buf)) as z:
        return z.read("archive/data.pkl")


@settings(max_examples=200)
@given(data=st.data())
def test_fuzz_corrupt_pickles_only_raise_minriff_errors(tmp_path_factory, good_ckpt, data):
    marker = tmp_path_factory.getbasetemp() / "FUZZ_MARKER"
    pkl = bytearray(_data_pkl(good_ckpt))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, max(len(pkl) - 1, 0)))
        if op == "flip" and pkl:
            pkl[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del pkl[i: i + data.draw(st.integers(1, 20))]
        else:
            pkl[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        obj = torchpickle.unpickle(bytes(pkl))
        torchpickle.state_dict(obj)
    except MinriffError:
        pass
    assert not marker.exists()


@settings(max_examples=100)
@given(data=st.data())
def test_fuzz_corrupt_archives_only_raise_minriff_errors(tmp_path_factory, good_ckpt, data):
    p = tmp_path_factory.mktemp("fz") / "x.ckpt"
    p.write_bytes(_corrupt(good_ckpt, data))
    _read_every_tensor_or_minriff_error(p)


def test_storage_bounds_and_missing_entries_are_checked(tmp_path):
    p = tmp_path / "x.ckpt"
    torchpickle.save(p, {"a": np.zeros((2, 3), np.float32)})
    raw = _data_pkl(p.read_bytes())
    # claim a (3, 3) tensor on a 6-element storage
    bad = raw.replace(pickle.dumps((2, 3), protocol=2)[2:-1], pickle.dumps((3, 3), protocol=2)[2:-1])
    assert bad != raw
    with pytest.raises(WeightsError, match="runs past its storage"):
        torchpickle.unpickle(bad, torchpickle.TorchZip(p))
    q = tmp_path / "nodata.ckpt"
    with zipfile.ZipFile(q, "w") as z:
        z.writestr("archive/data.pkl", raw)
    with pytest.raises(WeightsError, match="missing"):
        np.asarray(torchpickle.state_dict(torchpickle.load(q))["a"])


def test_not_checkpoints(tmp_path):
    (tmp_path / "t.ckpt").write_text("hello")
    with pytest.raises(WeightsError, match="not a torch checkpoint"):
        torchpickle.load(tmp_path / "t.ckpt")
    (tmp_path / "legacy.ckpt").write_bytes(pickle.dumps(119547037146038801333356, protocol=2))
    with pytest.raises(WeightsError, match="corrupt"):  # the legacy magic number, then nothing
        torchpickle.load(tmp_path / "legacy.ckpt")
    (tmp_path / "pickle.ckpt").write_bytes(pickle.dumps(42, protocol=2))
    with pytest.raises(WeightsError, match="magic"):
        torchpickle.load(tmp_path / "pickle.ckpt")
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as z:
        z.writestr("readme.txt", "x")
    with pytest.raises(WeightsError, match="without data.pkl"):
        torchpickle.load(tmp_path / "z.zip")
    with pytest.raises(WeightsError, match="holds no tensors"):
        torchpickle.state_dict({"a": 1})


# ----------------------------------------------------------------------------- oracle: torch itself


@pytest.mark.oracle
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reads_what_torch_writes(tmp_path, zip_format):
    torch = oracle("torch")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    sd = {"f32": torch.randn(3, 4, generator=g), "f16": torch.randn(7, generator=g).half(),
          "bf16": torch.randn(2, 3, generator=g).bfloat16(), "f64": torch.randn(2, generator=g).double(),
          "i64": torch.arange(10), "i32": torch.arange(4, dtype=torch.int32), "u8": torch.arange(3, dtype=torch.uint8),
          "bool": torch.tensor([True, False]), "scalar": torch.tensor(3.5),
          "view_offset": base[2:], "transposed": base.t(), "column": base[:, 1],
          "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)), "empty": torch.zeros(0, 3)}
    p = tmp_path / "t.ckpt"
    torch.save({"state_dict": sd, "epoch": 1}, p, _use_new_zipfile_serialization=zip_format)
    got = torchpickle.state_dict(torchpickle.load(p))
    assert set(got) == set(sd)
    for k, t in sd.items():
        want = t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()
        a = np.asarray(got[k])
        assert a.shape == want.shape and a.dtype == want.dtype and np.array_equal(a, want), k


@pytest.mark.oracle
def test_torch_reads_what_we_write(tmp_path):
    torch = oracle("torch")
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(6, dtype=np.int64).reshape(2, 3),
               "c": rng.standard_normal(5).astype(np.float16), "s": np.array(1.5, np.float64)}
    p = tmp_path / "ours.bin"
    torchpickle.save(p, tensors, wrap_key="state_dict")
    back = torch.load(p, weights_only=True)["state_dict"]
    for k, v in tensors.items():
        assert tuple(back[k].shape) == v.shape and np.array_equal(back[k].numpy(), v), k


def test_resource_bombs_are_refused_cheaply(tmp_path):
    # a memo index of 2**31-1 would make the C unpickler allocate a 16 GB memo table
    with pytest.raises(WeightsError, match="memo index"):
        torchpickle.unpickle(b"\x80\x02K\x01r\xff\xff\xff\x7f.")
    # a stride-0 tensor far larger than its one-element storage
    p = tmp_path / "one.ckpt"
    torchpickle.save(p, {"a": np.zeros(1, np.float32)})
    raw = _data_pkl(p.read_bytes())
    shape, stride = pickle.dumps((1,), protocol=2)[2:-1], pickle.dumps((1,), protocol=2)[2:-1]
    bomb = raw.replace(shape + stride, pickle.dumps((10**12,), protocol=2)[2:-1] + pickle.dumps((0,), protocol=2)[2:-1])
    assert bomb != raw
    with pytest.raises(WeightsError, match="runs past its storage"):
        torchpickle.unpickle(bomb, torchpickle.TorchZip(p))


def test_safetensors_whose_length_starts_like_a_pickle(tmp_path):
    """A safetensors header of 128 + 256k bytes starts with 0x80, the pickle PROTO opcode: it is
    still safetensors (seen with a LoRA file whose header came out 640 bytes long)."""
    from minriff.weights.safetensors import SafetensorsFile, write_safetensors

    meta = {}
    for pad in range(400):
        meta["pad"] = "x" * pad
        write_safetensors(tmp_path / "a.safetensors", [("w", (2,), "F32", lambda: np.ones(2, np.float32))], meta)
        if (tmp_path / "a.safetensors").read_bytes()[0] == 0x80:
            break
    assert (tmp_path / "a.safetensors").read_bytes()[:1] == b"\x80"
    assert torchpickle.checkpoint_kind(tmp_path / "a.safetensors") is None
    assert np.array_equal(SafetensorsFile(tmp_path / "a.safetensors")["w"], np.ones(2, np.float32))
