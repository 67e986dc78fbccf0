"""LoRA adapters merged into a pipeline's weights: several at once, reweighted, removed exactly.

    name = riff.load_lora("style.safetensors", weight=0.8)   # file reading: weights/lora.py
    riff.set_lora_weight(name, 0.5)     # re-merges only the layers this LoRA touches
    riff.unload_lora(name)              # those layers are bit for bit what they were before
    riff.loras                          # [LoraInfo(name, file, weight, rank, targets, format)]

Every touched weight is W = W0 + Σ_i w_i · scale_i · up_i @ down_i (scale = alpha / rank, per
layer), summed in float32 from the kept original W0 in load order and stored in the parameter's
dtype: no per-step cost, and the same result however the weights were reached. LoRAs at weight 0
are left out of the sum, and a tensor no LoRA touches gets W0 itself back: weight 0 and unloading
are bit-identical to never loading.

W0 is kept once per touched tensor while any LoRA touches it: the original array itself (merging
replaces parameters, never writes into them), or an exact float16 copy of it when every value is
a float16 value (weights loaded from an fp16 file), which halves what keeping costs. Copies (and
the LoRA matrices) live in their own memory maps, so unloading returns their memory to the system.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minriff.errors import InputError
from minriff.inputs import check_lora_weight
from minriff.weights.lora import LoraFile, off_heap, read_lora
from minriff.weights.lora_names import COMPONENTS, Targets


@dataclass(frozen=True)
class LoraInfo:
    name: str
    file: str
    weight: float
    rank: int  # the largest rank in the file
    targets: dict  # component -> number of layers it changes
    format: str


@dataclass
class _Loaded:
    lora: LoraFile
    weight: float
    by_target: dict = field(default_factory=dict)  # (component, module) -> LoraLayer

    def __post_init__(self):
        self.by_target = {(la.target.component, la.target.module): la for la in self.lora.layers}


@dataclass(frozen=True)
class _Kept:
    """An original weight: the array itself, or its exact float16 copy (then `dtype` is the original's)."""
    array: object
    dtype: np.dtype

    def restore(self):
        return self.array if self.array.dtype == self.dtype else self.array.astype(self.dtype)

    @staticmethod
    def of(p) -> _Kept:
        if isinstance(p, np.ndarray) and p.dtype == np.float32:
            with np.errstate(over="ignore"):  # values beyond float16's range: not exact, kept as they are
                half = off_heap(p, np.float16)  # returned to the system when unloaded
            # equal values are equal bits here: the cast keeps the sign of zero, and NaN != NaN
            # (a tensor with NaN is kept as it is)
            if np.array_equal(half, p):
                return _Kept(half, p.dtype)
        return _Kept(p, p.dtype)


class LoraStack:
    """The LoRAs of one pipeline. Methods take the pipeline (`riff`: its text_encoder, unet, F and
    text cache) because merging changes its models' parameters."""

    def __init__(self):
        self._loaded: dict[str, _Loaded] = {}  # load order
        self._kept: dict[tuple[str, str], _Kept] = {}
        self._targets: Targets | None = None

    def __len__(self) -> int:
        return len(self._loaded)

    def copy(self) -> LoraStack:
        """For Riffusion.clone: kept arrays are never written into, so sharing them is safe."""
        new = LoraStack()
        new._loaded = {n: _Loaded(e.lora, e.weight) for n, e in self._loaded.items()}
        new._kept, new._targets = dict(self._kept), self._targets
        return new

    def targets(self, riff) -> Targets:
        if self._targets is None:
            self._targets = Targets({c: getattr(riff, c) for c in COMPONENTS})
        return self._targets

    def infos(self) -> list[LoraInfo]:
        return [LoraInfo(name, str(e.lora.path), e.weight, max(la.rank for la in e.lora.layers), e.lora.counts(),
                         e.lora.format) for name, e in self._loaded.items()]

    @property
    def kept_bytes(self) -> int:
        """Memory held beyond the model's own: the kept originals (the model holds merged arrays
        meanwhile) and the LoRA matrices."""
        kept = sum(k.array.nbytes for k in self._kept.values())
        return kept + sum(la.down.nbytes + la.up.nbytes for e in self._loaded.values() for la in e.lora.layers)

    # ---- the API behind Riffusion.load_lora / set_lora_weight / unload_lora
    def load(self, riff, path, weight=1.0, name=None, strict=True) -> str:
        weight = check_lora_weight(weight)
        name = self._new_name(path, name)
        lora = read_lora(path, self.targets(riff), strict=strict)
        entry = self._loaded[name] = _Loaded(lora, weight)
        try:
            self._merge(riff, entry.by_target)
        except BaseException:  # an interrupted merge leaves no half-merged model behind
            del self._loaded[name]
            self._merge(riff, entry.by_target)
            raise
        return name

    def set_weight(self, riff, name: str, weight) -> None:
        entry = self._entry(name)
        entry.weight = check_lora_weight(weight)
        self._merge(riff, entry.by_target)

    def unload(self, riff, name: str) -> None:
        entry = self._entry(name)
        del self._loaded[name]
        self._merge(riff, entry.by_target)

    # ---- merging
    def _merge(self, riff, keys) -> None:
        """Recompute each (component, module) weight from its original and every LoRA on it."""
        F = riff._ops()
        for key in keys:
            comp, module = key
            model, pname = getattr(riff, comp), module + ".weight"
            parts = [(e.weight, e.by_target[key]) for e in self._loaded.values()
                     if e.weight != 0 and key in e.by_target]
            kept = self._kept.get(key)
            if not parts:
                if kept is not None:
                    model._set(pname, kept.restore())
                    del self._kept[key]
                continue
            original = kept.array if kept is not None else _param(model, pname)
            if kept is None:
                kept = self._kept[key] = _Kept.of(original)
            host = F.to_host(original)
            acc = None
            for weight, layer in parts:  # (W0 + Δ1) + Δ2 ..., in float32 whatever the stored dtype
                delta = layer.delta(weight * layer.scale)
                if acc is None:
                    acc = delta  # Δ1 + W0 == W0 + Δ1, without a separate copy of W0 when it is float32
                    acc += host if host.dtype == np.float32 else host.astype(np.float32)
                else:
                    acc += delta
            model._set(pname, F.asarray(acc.astype(kept.dtype, copy=False)))
        if any(comp == "text_encoder" for comp, _ in keys):
            riff._text_cache.clear()

    def _entry(self, name) -> _Loaded:
        if name not in self._loaded:
            loaded = ", ".join(self._loaded) or "none"
            raise InputError(f"no LoRA named {name!r} is loaded (loaded: {loaded})")
        return self._loaded[name]

    def _new_name(self, path, name) -> str:
        if name is not None:
            if not isinstance(name, str) or not name:
                raise InputError(f"LoRA name must be a non-empty string, got {name!r}")
            if name in self._loaded:
                raise InputError(f"a LoRA named {name!r} is already loaded; unload it or choose another name")
            return name
        stem = Path(path).stem or "lora"
        name, n = stem, 1
        while name in self._loaded:
            n += 1
            name = f"{stem}-{n}"
        return name


def _param(model, dotted: str):
    obj = model
    for part in dotted.split("."):
        obj = obj[int(part)] if isinstance(obj, (list, tuple)) else getattr(obj, part)
    return obj
