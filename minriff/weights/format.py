"""minriff's converted weights file: one safetensors file holding the text encoder, UNet and VAE.

Tensor names carry a component prefix (`text_encoder.`, `unet.`, `vae.`) followed by the diffusers /
transformers state-dict key. `__metadata__` values are JSON-encoded strings: `format` ("minriff-1"),
`config` ({"text_encoder": ..., "unet": ..., "vae": ...}, the diffusers config.json values),
`tokenizer_vocab` (dict or null), `tokenizer_merges` (list or null), `scheduler_config`, `source`.

Tensors are stored fp16 by default and kept in the dtype they are stored in (load_models' default:
fp16 weights are widened to float32 where the ops use them, half the memory of a float32 model),
or cast to a given dtype one at a time while the models are filled (`nn.load`), so peak memory
stays near the model's size, never file + copy.

    load_models(path, dtype=None) -> dict(text_encoder, unet, vae, tokenizer, scheduler_config, config)
    find_weights(path=None)  the file to load: a path, $MINRIFF_WEIGHTS, the newest in ./weights/ or in
                             minriff's home (~/.cache/minriff); `firstrun.ensure_weights` adds the download
                             (files holding only TAESD or a ControlNet, weights/taesd.py and controlnet.py,
                             are skipped)
    compute_dtype(dtype)     a dtype to hold weights in: float32 (also for None) / float16 / float64, else InputError
    check_vocab(...)         tokenizer ids must index the text encoder's embedding
    write_weights(...)       the one writer (convert, init-random and Riffusion.save use it)
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from minriff import schedulers
from minriff.configs import PRESETS, SD15_SCHEDULER, ConfigError, ModelConfig, check_model_config
from minriff.errors import InputError, WeightsError
from minriff.models import nn
from minriff.models.init import COMPONENTS, build_models
from minriff.models.tokenizer import CLIPTokenizer, tiny_vocab
from minriff.progress import Progress
from minriff.weights import hub
from minriff.weights.safetensors import SafetensorsFile, write_safetensors

FORMAT = "minriff-1"
STORE_DTYPES = {"fp16": "F16", "fp32": "F32"}
WEIGHTS_ENV = "MINRIFF_WEIGHTS"
HOW_TO_GET_WEIGHTS = (
    "get weights with `minriff download` (the real Riffusion model, needs internet; a run without "
    "--weights also downloads it unless offline), "
    "`minriff convert CHECKPOINT -o weights/riffusion.safetensors` (a checkpoint you have), or "
    "`minriff init-random --config tiny -o weights/tiny.safetensors` (a random test model: it runs, "
    "but makes noise)"
)


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

    def cast(self, dtype, on_read=None) -> Mapping:
        """The same keys; each value reads as a `dtype` copy (dtype None: float16 and float32 as stored,
        others as float32) and releases its file pages afterwards (then calls `on_read()`, e.g. a
        progress bar's update). Copies, not views of the file: parameters are writable (a LoRA merge
        writes them) and the file's pages are not kept."""
        dt = None if dtype is None else np.dtype(dtype)
        return {k: _CastOnRead(self._st, self._prefix + k, dt, on_read) for k in self._keys}


class _CastOnRead:
    def __init__(self, st: SafetensorsFile, name: str, dtype: np.dtype | None, on_read=None):
        self._st, self._name, self._dtype, self._on_read = st, name, dtype, on_read
        self.shape = st.shape(name)

    def __array__(self, dtype=None, copy=None):
        a = self._st[self._name]
        want = self._dtype or (a.dtype if a.dtype in (np.float16, np.float32) else np.dtype(np.float32))
        a = a.astype(want)  # a copy, also of a view of the file in the same dtype
        self._st.release(self._name)
        if self._on_read is not None:
            self._on_read()
        return a if dtype is None else a.astype(dtype, copy=False)


def file_kind(meta: dict) -> str:
    """"taesd" for a file holding only the tiny autoencoder (weights/taesd.py), "controlnet" for a
    ControlNet (weights/controlnet.py), else "models"."""
    try:
        config = json.loads(meta.get("config", "{}"))
    except ValueError:
        return "models"
    if isinstance(config, dict) and set(config) in ({"taesd"}, {"controlnet"}):
        return next(iter(config))
    return "models"


class WeightsFile:
    def __init__(self, path):
        self.path = Path(path)
        self.tensors = SafetensorsFile(path)
        meta = self.tensors.metadata
        if "minriff" not in meta.get("format", ""):  # other writers use "format" too ("pt", "np")
            raise WeightsError(f"{self.path}: a safetensors file but not in minriff's format "
                               "(no minriff 'format' metadata); "
                               f"convert it first: minriff convert {self.path} -o weights/NAME.safetensors")
        if file_kind(meta) == "taesd":
            raise WeightsError(f"{self.path} holds only TAESD, the tiny autoencoder, not the models to generate "
                               "with; pass it as --taesd FILE (Riffusion(taesd=...)) and the main file as --weights")
        if file_kind(meta) == "controlnet":
            raise WeightsError(f"{self.path} holds a ControlNet, not the models to generate with; pass it as "
                               "--control FILE:IMAGE (controls=[...]) and the main file as --weights")
        self.format = _json(meta, "format", self.path)
        if self.format != FORMAT:
            raise WeightsError(f"{self.path}: format {self.format!r} is not supported (this minriff reads {FORMAT!r})")
        self.raw_config = _json(meta, "config", self.path)
        self.scheduler_config = _json(meta, "scheduler_config", self.path)
        self.source = _json(meta, "source", self.path) if "source" in meta else None
        self._vocab = _json(meta, "tokenizer_vocab", self.path) if "tokenizer_vocab" in meta else None
        self._merges = _json(meta, "tokenizer_merges", self.path) if "tokenizer_merges" in meta else None
        try:  # the same checks as converting (convert.check_configs)
            self.config = check_model_config(self.raw_config)
            schedulers.check_config(self.scheduler_config)
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
        if not isinstance(self._merges, list):
            raise WeightsError(f"{self.path}: tokenizer_merges metadata is not a list")
        check_vocab(self._vocab, self.config.text_encoder.vocab_size, self.path)
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
    except (ValueError, RecursionError) as e:
        raise WeightsError(f"{path}: metadata {key!r} is not valid JSON ({type(e).__name__})") from None


def check_vocab(vocab, vocab_size: int, where) -> None:
    """Tokenizer ids must index the text encoder's token embedding: integers in [0, vocab_size)."""
    if not isinstance(vocab, dict):
        raise WeightsError(f"{where}: the tokenizer vocabulary is not a mapping token -> id")
    bad = next((f"{k!r}: {v!r}" for k, v in vocab.items()
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab_size), None)
    if bad:
        raise WeightsError(f"{where}: tokenizer id {bad} is not an integer in [0, {vocab_size}) "
                           f"(the text encoder's vocab_size)")



COMPUTE_DTYPES = (np.float16, np.float32, np.float64)


def compute_dtype(dtype) -> np.dtype:
    """The dtype models are loaded in: float32 (the default, also for None), float16 or float64; InputError otherwise
    (an integer dtype would truncate every weight to 0 or ±1 and make a constant image)."""
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in [np.dtype(d) for d in COMPUTE_DTYPES]:
        raise InputError(f"dtype {dtype!r}: models compute in float32 (default), float16 or float64")
    return dt


def load_models(path, dtype=None, quiet: bool = True, components=COMPONENTS) -> dict:
    """Build the three models from a converted file's configs and fill them: tensors held as stored
    (dtype None: float16 and float32 tensors as they are) or cast to `dtype` per tensor;
    `quiet=False` shows one progress bar per component ("loading unet [###...] 686/686 2.1s").
    Components not in `components` are None (loaded later with `load_component`)."""
    dtype = None if dtype is None else compute_dtype(dtype)
    wf = WeightsFile(path)
    models = dict.fromkeys(COMPONENTS)
    for name in components:
        models[name] = fill_component(wf, name, build_models(wf.config, only=name)[name], dtype, quiet)
    tokenizer = wf.tokenizer() if wf.has_tokenizer else MissingTokenizer(wf)
    return dict(models, tokenizer=tokenizer, scheduler_config=wf.scheduler_config, config=wf.config)


def fill_component(wf: WeightsFile, name: str, model, dtype=None, quiet: bool = True):
    """Load component `name` ("unet", ...) of a weights file into its (unallocated) model."""
    component = wf.component(name)
    bar = Progress(len(component), f"loading {name:12s}", quiet=quiet)
    nn.load(model, component.cast(dtype, bar.update), what=name.replace("_", " "), dtype=dtype)
    bar.close()
    return model


def load_component(path, name: str, dtype=None, quiet: bool = True):
    """One model of a converted file (`name`: text_encoder, unet or vae), e.g. to load parts on demand."""
    dtype = None if dtype is None else compute_dtype(dtype)
    wf = WeightsFile(path)
    return fill_component(wf, name, build_models(wf.config, only=name)[name], dtype, quiet)


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


# ----------------------------------------------------------------------------- finding


def find_weights(path=None) -> Path:
    """A converted weights file: `path` (file, or folder -> newest *.safetensors in it), else the newest
    in $MINRIFF_WEIGHTS (file or folder), else in ./weights/, else in minriff's home folder
    (~/.cache/minriff, $MINRIFF_HOME: where a first run's download is converted to). Never downloads:
    `firstrun.ensure_weights` does that."""
    if path is not None:
        p = Path(path)
        if p.is_dir():
            return _newest(p) or _no_weights(f"no *.safetensors file in {p}")
        if p.is_file():
            return p
        raise WeightsError(f"weights file not found: {p}; {HOW_TO_GET_WEIGHTS}")
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        p = Path(env)
        if p.is_file():
            return p
        if p.is_dir() and _newest(p):
            return _newest(p)
    found = _newest(Path("weights")) or _newest(hub.minriff_home())
    if found:
        return found
    where = f"${WEIGHTS_ENV} ({env}), ./weights/" if env else "./weights/ (or $MINRIFF_WEIGHTS)"
    _no_weights(f"no converted weights found in {where} or {hub.minriff_home()}")


def _newest(folder: Path, kind: str = "models"):
    """The newest *.safetensors file in `folder` of that kind (TAESD files sit beside the main one)."""
    files = sorted(folder.glob("*.safetensors"), key=lambda f: f.stat().st_mtime) if folder.is_dir() else []
    for f in reversed(files):
        try:
            if file_kind(SafetensorsFile(f).metadata) == kind:
                return f
        except WeightsError:  # unreadable: counted as a main file, so loading it reports why
            if kind == "models":
                return f
    return None


def _no_weights(msg):
    raise WeightsError(f"{msg}; {HOW_TO_GET_WEIGHTS}")


# ----------------------------------------------------------------------------- writing


def write_weights(out, tensors: dict, configs: dict, vocab=None, merges=None, scheduler_config=None,
                  source=None, dtype: str = "fp16", quiet: bool = True) -> int:
    """Write a minriff weights file. `tensors`: component -> {key: (shape, read[, release])}, where
    read() returns the array (called once, when that tensor is written) and release() is called after.
    `configs`: component -> config dict. Returns the number of tensors written. `quiet=False`: a
    progress bar over the tensors (reading a big checkpoint happens here, tensor by tensor)."""
    if dtype not in STORE_DTYPES:
        raise WeightsError(f"dtype {dtype!r}: choose fp16 or fp32")
    name = STORE_DTYPES[dtype]
    entries = []
    bar = Progress(sum(len(t) for t in tensors.values()), f"writing {Path(out).name}", quiet=quiet)
    for comp in COMPONENTS:
        for key, (shape, read, *release) in sorted(tensors[comp].items()):
            full = f"{comp}.{key}"
            entries.append((full, shape, name, _fits_fp16(full, read) if name == "F16" else read, *release,
                            bar.update))
    meta = {"format": FORMAT, "config": configs, "tokenizer_vocab": vocab, "tokenizer_merges": merges,
            "scheduler_config": dict(scheduler_config or SD15_SCHEDULER), "source": source or {}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(out, entries, {k: json.dumps(v) for k, v in meta.items()})
    bar.close()
    return len(entries)


def write_single_model(out, kind: str, prefix: str, tensors: dict, config: dict, source: dict | None = None,
                       dtype: str = "fp16") -> int:
    """Write a file holding one model beside the main weights (`kind` "taesd" or "controlnet", see
    `file_kind`): `tensors` {diffusers key: (shape, read[, release])} stored under `prefix`; `config`
    the model's config dict (stored without diffusers' `_` bookkeeping keys)."""
    if dtype not in STORE_DTYPES:
        raise WeightsError(f"dtype {dtype!r}: choose fp16 or fp32")
    name = STORE_DTYPES[dtype]
    entries = []
    for key, (shape, read, *release) in sorted(tensors.items()):
        full = prefix + key
        entries.append((full, shape, name, _fits_fp16(full, read) if name == "F16" else read, *release))
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    meta = {"format": FORMAT, "config": {kind: config}, "source": source or {}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(out, entries, {k: json.dumps(v) for k, v in meta.items()})
    return len(entries)


class SingleModelFile:
    """What a single-model file (`write_single_model`) offers once opened: `self.path`, `self.tensors`
    (a SafetensorsFile) and `self.prefix` are set by the subclass; `_read_header` checks the kind and
    format and returns (config dict, source)."""

    def _read_header(self, kind: str, label: str, how_to_get: str) -> tuple[dict, dict]:
        meta = self.tensors.metadata
        if "minriff" not in meta.get("format", "") or file_kind(meta) != kind:
            raise WeightsError(f"{self.path} is not a minriff {label} file; {how_to_get}")
        if json.loads(meta["format"]) != FORMAT:
            raise WeightsError(f"{self.path}: format {meta['format']} is not supported (this minriff reads {FORMAT!r})")
        return json.loads(meta["config"])[kind], json.loads(meta.get("source", "{}"))

    def tensor_names(self) -> list[str]:
        return [k[len(self.prefix):] for k in self.tensors if k.startswith(self.prefix)]

    def summary(self) -> dict:
        names = self.tensor_names()
        dtypes = sorted({self.tensors.dtype_name(self.prefix + k) for k in names})
        params = sum(int(np.prod(self.tensors.shape(self.prefix + k))) for k in names)
        return {"tensors": len(names), "parameters": params, "dtypes": dtypes}


def _fits_fp16(name: str, read):
    """read() plus a check that fp16 storage will not turn large weights into inf."""
    def make():
        a = np.asarray(read())
        if a.size and a.dtype.kind == "f" and float(np.max(np.abs(a))) > float(np.finfo(np.float16).max):
            raise WeightsError(f"tensor {name} has values beyond the fp16 range; store it as fp32 (--dtype fp32)")
        return a
    return make


def config_dicts(config: ModelConfig) -> dict:
    return {"text_encoder": config.text_encoder.to_dict(), "unet": config.unet.to_dict(), "vae": config.vae.to_dict()}


def write_random(out, config: str = "tiny", dtype: str = "fp16", seed: int = 0, std: float = 0.02) -> int:
    """Random weights with real (sd15) or tiny shapes and the tiny tokenizer vocabulary (no real CLIP
    vocabulary is available offline; the sd15 file is for speed/memory benchmarks, where the tokens
    do not matter). Biases 0, norm weights 1, other weights N(0, std²) (std 0: all zero, fastest)."""
    if config not in PRESETS:
        raise InputError(f"--config {config!r}: choose one of {', '.join(PRESETS)}")
    vocab, merges = tiny_vocab()
    cfg = PRESETS[config]
    models = build_models(cfg)
    rng = np.random.default_rng(seed)
    tensors = {comp: {key: (shape, lambda key=key, shape=shape: _init_value(key, shape, rng, std))
                      for key, shape in models[comp].parameter_shapes().items()} for comp in COMPONENTS}
    source = {"type": "random", "config": config, "seed": seed, "std": std,
              "note": "random weights with the tiny tokenizer vocabulary; for tests and benchmarks only"}
    return write_weights(out, tensors, config_dicts(cfg), vocab, merges, SD15_SCHEDULER, source, dtype)


def _init_value(key: str, shape: tuple, rng: np.random.Generator, std: float) -> np.ndarray:
    if key.endswith(".bias"):
        return np.zeros(shape, np.float32)
    if len(shape) == 1 and "norm" in key:
        return np.ones(shape, np.float32)
    if std == 0:  # fast path for memory benchmarks
        return np.zeros(shape, np.float32)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
