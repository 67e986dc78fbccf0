"""minriff's weights format: one safetensors file holding the text encoder, UNet and VAE.

File layout (plain safetensors, readable by any safetensors tool):
    8 bytes   little-endian u64 N = header length
    N bytes   JSON header: {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}
    rest      tensor bytes, offsets relative to the end of the header
Tensor names carry a component prefix (`text_encoder.`, `unet.`, `vae.`) followed by the diffusers /
transformers state-dict key. `__metadata__` values are JSON-encoded strings: `format` ("minriff-1"),
`config` ({"text_encoder": ..., "unet": ..., "vae": ...}, the diffusers config.json values),
`tokenizer_vocab` (dict or null), `tokenizer_merges` (list or null), `scheduler_config`, `source`.

Reading uses our own header parser and `np.frombuffer` on a read-only mmap rather than the
safetensors package: every corruption gets a precise WeightsError naming the tensor and the offsets,
tensors cost no memory until touched, and casting to the compute dtype happens per tensor in
`nn.load` (peak memory ~ the fp32 model, never fp16 file + fp32 copy of everything at once).
"""
from __future__ import annotations

import io
import json
import mmap
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Iterable

import numpy as np

from .configs import CLIPTextConfig, ConfigError, ModelConfig, UNetConfig, VAEConfig
from .errors import WeightsError

FORMAT = "minriff-1"
COMPONENTS = ("text_encoder", "unet", "vae")
MAX_HEADER = 100 * 1024 * 1024  # same cap as the safetensors library

# safetensors dtype name -> NumPy dtype ("BF16" is stored as raw uint16 and widened on read)
DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
NAMES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
         np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
         np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32: bf16 is the top half of an IEEE float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


# ----------------------------------------------------------------------------- reading


class SafetensorsFile(Mapping):
    """A safetensors file as a read-only Mapping name -> np.ndarray (views on an mmap)."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            f = io.open(self.path, "rb")
        except OSError as e:
            raise WeightsError(f"cannot open {self.path}: {e.strerror or e}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{self.path}: not a safetensors file ({size} bytes, too short for a header)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER:
                raise WeightsError(f"{self.path}: header length {n} exceeds the {MAX_HEADER}-byte limit (not a safetensors file?)")
            if 8 + n > size:
                raise WeightsError(f"{self.path}: truncated: header says {n} bytes but the file has {size - 8} after the length")
            raw = f.read(n)
            self._entries, self.metadata = _parse_header(raw, self.path)
            self._start = 8 + n
            data_len = size - self._start
            end = max((e["data_offsets"][1] for e in self._entries.values()), default=0)
            if end > data_len:
                raise WeightsError(f"{self.path}: truncated: tensor data needs {end} bytes, file has {data_len}")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None

    def __getitem__(self, name: str) -> np.ndarray:
        e = self._entries[name]
        dt = np.dtype(DTYPES[e["dtype"]])
        begin, end = e["data_offsets"]
        count = (end - begin) // dt.itemsize
        arr = np.frombuffer(self._mm, dtype=dt, count=count, offset=self._start + begin) if count else np.empty(0, dt)
        arr = arr.reshape(e["shape"])
        return bf16_to_f32(arr) if e["dtype"] == "BF16" else arr

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def release(self, name: str) -> None:
        """Drop a tensor's pages from this process's resident set (they stay in the OS page cache
        and fault back in if touched again): keeps RSS low while tensors are cast one by one."""
        if self._mm is None or not hasattr(self._mm, "madvise"):
            return
        begin, end = self._entries[name]["data_offsets"]
        start = (self._start + begin) // mmap.PAGESIZE * mmap.PAGESIZE
        stop = min(self._start + end, len(self._mm))
        if stop > start:
            self._mm.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def shape(self, name: str) -> tuple:
        return tuple(self._entries[name]["shape"])

    def dtype_name(self, name: str) -> str:
        return self._entries[name]["dtype"]


def _parse_header(raw: bytes, path) -> tuple[dict, dict]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise WeightsError(f"{path}: header is not valid UTF-8 JSON ({e}); not a safetensors file?") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: header is a JSON {type(header).__name__}, expected an object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise WeightsError(f"{path}: __metadata__ must map strings to strings")
    spans = []
    for name, e in header.items():
        _check_entry(name, e, path)
        spans.append((*e["data_offsets"], name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise WeightsError(f"{path}: tensors {n0!r} and {n1!r} overlap (bytes {b0}-{e0} and {b1}-{e1})")
    return header, meta


def _check_entry(name: str, e, path) -> None:
    if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= set(e):
        raise WeightsError(f"{path}: tensor {name!r}: header entry needs dtype, shape and data_offsets")
    if e["dtype"] not in DTYPES:
        raise WeightsError(f"{path}: tensor {name!r}: unknown dtype {e['dtype']!r} (known: {', '.join(DTYPES)})")
    shape, offs = e["shape"], e["data_offsets"]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise WeightsError(f"{path}: tensor {name!r}: bad shape {shape!r}")
    if (not isinstance(offs, list) or len(offs) != 2 or not all(type(o) is int for o in offs)
            or not 0 <= offs[0] <= offs[1]):
        raise WeightsError(f"{path}: tensor {name!r}: bad data_offsets {offs!r}")
    need = int(np.prod(shape, dtype=object)) * np.dtype(DTYPES[e["dtype"]]).itemsize
    if offs[1] - offs[0] != need:
        raise WeightsError(f"{path}: tensor {name!r}: {e['dtype']}{shape} needs {need} bytes, "
                           f"data_offsets span {offs[1] - offs[0]}")


# ----------------------------------------------------------------------------- writing


def write_safetensors(path, tensors: Iterable[tuple], metadata: dict[str, str] | None = None) -> None:
    """Stream tensors to `path`. `tensors` yields (name, shape, dtype_name, make_array[, done]):
    arrays are produced and written one at a time (then `done()` is called, e.g. to release the
    source's file pages), so writing never holds more than one tensor in memory.
    Written to a temporary file first and renamed, so a crash never leaves a half file under `path`."""
    items = list(tensors)
    header, offset = {}, 0
    for name, shape, dtype_name, *_ in items:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[dtype_name]).itemsize
        header[name] = {"dtype": dtype_name, "shape": [int(d) for d in shape], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # tensor data starts 8-byte aligned
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with io.open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for name, shape, dtype_name, make, *done in items:
                arr = np.asarray(make(), dtype=DTYPES[dtype_name])
                if arr.shape != tuple(shape):
                    raise WeightsError(f"tensor {name!r}: produced shape {arr.shape}, declared {tuple(shape)}")
                f.write(memoryview(np.ascontiguousarray(arr.reshape(-1))).cast("B"))
                del arr
                for callback in done:
                    callback()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------- the converted format


class Component(Mapping):
    """The tensors of one component, keys without the prefix, values memory-mapped arrays."""

    def __init__(self, st: SafetensorsFile, prefix: str):
        self._st, self._prefix = st, prefix
        self._keys = [k[len(prefix):] for k in st if k.startswith(prefix)]

    def __getitem__(self, key):
        return self._st[self._prefix + key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)

    def dtype_name(self, key):
        return self._st.dtype_name(self._prefix + key)

    def cast(self, dtype) -> "Mapping":
        """The same keys; each value reads as a `dtype` copy and releases its file pages afterwards."""
        return {k: _CastOnRead(self._st, self._prefix + k, np.dtype(dtype)) for k in self._keys}


class _CastOnRead:
    def __init__(self, st: SafetensorsFile, name: str, dtype: np.dtype):
        self._st, self._name, self._dtype = st, name, dtype
        self.shape = st.shape(name)

    def __array__(self, dtype=None, copy=None):
        a = self._st[self._name]
        if a.dtype != self._dtype:
            a = a.astype(self._dtype)
            self._st.release(self._name)
        return a if dtype is None else a.astype(dtype, copy=False)


class WeightsFile:
    def __init__(self, path):
        self.path = Path(path)
        self.tensors = SafetensorsFile(path)
        meta = self.tensors.metadata
        if "minriff" not in meta.get("format", ""):  # other writers use "format" too ("pt", "np")
            raise WeightsError(f"{self.path}: a safetensors file but not in minriff's format (no minriff 'format' metadata); "
                               f"convert it first: minriff convert {self.path} -o weights/NAME.safetensors")
        self.format = _json(meta, "format", self.path)
        if self.format != FORMAT:
            raise WeightsError(f"{self.path}: format {self.format!r} is not supported (this minriff reads {FORMAT!r})")
        self.raw_config = _json(meta, "config", self.path)
        self.scheduler_config = _json(meta, "scheduler_config", self.path)
        if not isinstance(self.scheduler_config, dict):
            raise WeightsError(f"{self.path}: scheduler_config metadata is not a JSON object")
        self.source = _json(meta, "source", self.path) if "source" in meta else None
        self._vocab = _json(meta, "tokenizer_vocab", self.path) if "tokenizer_vocab" in meta else None
        self._merges = _json(meta, "tokenizer_merges", self.path) if "tokenizer_merges" in meta else None
        try:
            self.config = ModelConfig(
                text_encoder=CLIPTextConfig.from_dict(self.raw_config["text_encoder"]),
                unet=UNetConfig.from_dict(self.raw_config["unet"]),
                vae=VAEConfig.from_dict(self.raw_config["vae"]))
        except (KeyError, TypeError) as e:
            raise WeightsError(f"{self.path}: config metadata lacks a component ({e})") from None
        except ConfigError as e:
            raise WeightsError(f"{self.path}: stored config is invalid: {e}") from None

    def component(self, name: str) -> Component:
        if name not in COMPONENTS:
            raise WeightsError(f"unknown component {name!r} (known: {', '.join(COMPONENTS)})")
        return Component(self.tensors, name + ".")

    @property
    def has_tokenizer(self) -> bool:
        return bool(self._vocab) and self._merges is not None

    def tokenizer(self):
        if not self.has_tokenizer:
            raise WeightsError(f"{self.path} holds no tokenizer vocabulary (it was converted from a single-file "
                               "checkpoint without --tokenizer); reconvert with --tokenizer DIR pointing at a CLIP "
                               "tokenizer folder (vocab.json + merges.txt, or tokenizer.json)")
        from .tokenizer import CLIPTokenizer
        if not isinstance(self._merges, list):
            raise WeightsError(f"{self.path}: tokenizer_merges metadata is not a list")
        return CLIPTokenizer(self._vocab, self._merges, where=str(self.path))

    def summary(self) -> dict:
        """Per component: tensor count, parameter count, dtypes."""
        out = {}
        for name in COMPONENTS:
            comp = self.component(name)
            dtypes = sorted({comp.dtype_name(k) for k in comp})
            params = sum(int(np.prod(self.tensors.shape(name + "." + k))) for k in comp)
            out[name] = {"tensors": len(comp), "parameters": params, "dtypes": dtypes}
        return out


def _json(meta: dict, key: str, path):
    if key not in meta:
        raise WeightsError(f"{path}: metadata lacks {key!r}")
    try:
        return json.loads(meta[key])
    except ValueError as e:
        raise WeightsError(f"{path}: metadata {key!r} is not valid JSON ({e})") from None


def open(path) -> WeightsFile:  # noqa: A001 - the agreed name: `weights.open(path)`
    return WeightsFile(path)


def build_models(config: ModelConfig) -> dict:
    """Empty (unallocated) models for a config: name -> nn.Module."""
    from .clip import CLIPTextModel
    from .unet import UNet2DConditionModel
    from .vae import AutoencoderKL
    models = {}
    for name, cls, cfg in (("text_encoder", CLIPTextModel, config.text_encoder),
                           ("unet", UNet2DConditionModel, config.unet), ("vae", AutoencoderKL, config.vae)):
        try:
            models[name] = cls(cfg)
        except (TypeError, ValueError, OverflowError, MemoryError, ZeroDivisionError, IndexError, KeyError) as e:
            # configs.from_dict checks what minriff runs, not every field's type: a corrupt stored
            # config surfaces here
            raise WeightsError(f"the {name} config cannot build a model ({type(e).__name__}: {e}): {cfg}") from None
    return models


def load_models(path, dtype=np.float32) -> dict:
    """Build the three models from a converted file's configs and fill them (cast per tensor)."""
    from . import nn
    wf = open(path)
    models = build_models(wf.config)
    for name, model in models.items():
        nn.load(model, wf.component(name).cast(dtype), what=name.replace("_", " "), dtype=dtype)
    tokenizer = wf.tokenizer() if wf.has_tokenizer else MissingTokenizer(wf)
    return dict(models, tokenizer=tokenizer, scheduler_config=wf.scheduler_config, config=wf.config)


class MissingTokenizer:
    """Stands in for the tokenizer of a file converted without one: the models load (useful for
    image/audio-only work and benchmarks), and the first use says what to do."""

    def __init__(self, wf: WeightsFile):
        self._wf = wf

    def __call__(self, *args, **kwargs):
        self._wf.tokenizer()

    def __getattr__(self, name):  # .encode, .bos_id, ...: any use explains what is missing
        if name.startswith("__"):
            raise AttributeError(name)
        self._wf.tokenizer()


# ----------------------------------------------------------------------------- random weights

POOL_SIZE = 1 << 24  # normals drawn per init_random call at most (64 MB of float32)


def init_random(module, seed=0, std: float | None = None, pool_size: int = POOL_SIZE):
    """Fill every parameter of `module` (an nn.Module) in place with random float32 values and
    return it: weights (2-D and up) ~ N(0, 1/fan_in) (fan_in = inputs per output: in_features, or
    C_in·kh·kw) so activations stay O(1) through a deep network, or N(0, std²) if `std` is given;
    norm weights 1 + N(0, 0.05²); biases N(0, 0.05²). `seed`: anything np.random.default_rng takes.

    The values come from one pool of min(parameter count, pool_size) standard normals: a model
    that fits gets an independent stretch of it per tensor; a bigger one (SD 1.5's UNet has 860 M
    parameters) gets windows at random offsets, because drawing that many normals would dominate a
    benchmark's run time."""
    rng = np.random.default_rng(seed)
    params = list(module.named_parameters())
    total = sum(int(np.prod(p.shape)) for _, p in params)
    fits = total <= pool_size
    pool = rng.standard_normal(min(total, pool_size), dtype=np.float32)
    offset = 0
    for name, p in params:
        n = int(np.prod(p.shape))
        if fits:
            vals = pool[offset:offset + n]
            offset += n
        elif n <= pool.size:
            start = int(rng.integers(0, pool.size - n + 1))
            vals = pool[start:start + n]
        else:
            vals = np.resize(pool, n)
        vals = vals.reshape(p.shape)
        if p.ndim == 1:
            owner = name.rsplit(".", 2)[-2] if "." in name else ""
            base = 1.0 if "norm" in owner and name.endswith("weight") else 0.0
            value = base + np.float32(0.05) * vals
        else:
            fan_in = max(1, n // max(1, p.shape[0]))
            value = vals * np.float32(std if std is not None else 1.0 / np.sqrt(fan_in))
        module._set(name, np.ascontiguousarray(value, dtype=np.float32))
    return module


def random_models(config="tiny", seed=0) -> dict:
    """Randomly initialised models in the shape of `load_models`' result: dict(text_encoder=...,
    unet=..., vae=..., tokenizer=..., scheduler_config=..., config=...), ready for
    `minriff.Riffusion(random_models("tiny"))`. `config`: a ModelConfig or a preset name
    ("tiny", "sd15"). Weights as `init_random` (each component from its own seed stream); the
    tokenizer is the small built-in vocabulary (`tokenizer.tiny_vocab`) and the scheduler config
    Stable Diffusion 1.5's. Nothing is written to disk (`minriff init-random` writes a file).
    The outputs are noise; shapes and code paths are the real ones."""
    from .configs import PRESETS
    from .convert import SD15_SCHEDULER
    from .tokenizer import CLIPTokenizer, tiny_vocab

    if isinstance(config, str):
        if config not in PRESETS:
            raise ConfigError(f"unknown config preset {config!r}; choose one of {', '.join(PRESETS)}")
        config = PRESETS[config]
    if not isinstance(config, ModelConfig):
        raise ConfigError(f"config must be a ModelConfig or a preset name, got {type(config).__name__}")
    vocab, merges = tiny_vocab()
    if config.text_encoder.vocab_size < len(vocab):
        raise ConfigError(f"text_encoder.vocab_size {config.text_encoder.vocab_size} is smaller than the built-in "
                          f"tokenizer's {len(vocab)} tokens")
    models = build_models(config)
    for index, name in enumerate(COMPONENTS):
        init_random(models[name], seed=(seed, index))
    return dict(models, tokenizer=CLIPTokenizer(vocab, merges), scheduler_config=dict(SD15_SCHEDULER), config=config)
