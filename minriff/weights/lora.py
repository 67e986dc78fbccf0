"""LoRA files: read the formats people share, check everything, resolve each pair to a layer.

    lora = read_lora("style.safetensors", Targets(models))   # -> LoraFile: .layers, .format, ...

Formats (`.safetensors`, or torch `.bin`/`.pt` through the restricted unpickler):
- kohya-ss / A1111: `lora_unet_<flattened path>` and `lora_te_<flattened path>` with
  `.lora_down.weight` [r, in(, kh, kw)], `.lora_up.weight` [out, r(, 1, 1)] and an optional 0-d
  `.alpha`; LoCon adds 3x3 convs (ResNet conv1/conv2, down/upsampler convs: down has the base
  kernel, up is 1x1). LDM block names (`lora_unet_input_blocks_4_1_...`) too (lora_names.py).
- diffusers / PEFT: `unet.<path>.lora_A.weight` (down) / `.lora_B.weight` (up),
  `text_encoder.<path>...` with or without transformers' `text_model.`; alphas from the header
  metadata `lora_adapter_metadata` (LoraConfig JSON, keys prefixed `unet.` / `text_encoder.`:
  `lora_alpha`, `alpha_pattern`, `use_rslora`), else alpha = rank.
- older diffusers: attention processors (`...attn1.processor.to_q_lora.down.weight`, text encoder
  `...self_attn.to_q_lora...` and `...mlp.fc1.lora_linear_layer...`) and `...conv1.lora.down.weight`,
  with or without the `unet.` / `text_encoder.` prefix.

Scale of a layer = alpha / rank (alpha / sqrt(rank) for rsLoRA), per layer. A `.alpha` of 0 means
"unset" (= rank), as in kohya-ss' loader. A `<module>.alpha` key overrides the metadata.

Refused with a WeightsError naming the keys, never loaded in part: LoHa, LoKr, DoRA, IA3, GLoRA,
OFT, Tucker LoCon (`lora_mid`), `diff` patches, biases on the up matrix, embedding LoRAs, textual
inversion files, SDXL/SD3/Flux LoRAs; rank mismatches, half pairs, non-finite values, negative
alphas, integer tensors, shapes that do not fit the layer. Keys that match no layer are an error
(`strict=False`: a warning with their count, and they are listed in `LoraFile.skipped`).
"""
from __future__ import annotations

import json
import math
import mmap
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minriff.errors import WeightsError
from minriff.weights import torchpickle
from minriff.weights.lora_names import Target, Targets
from minriff.weights.safetensors import SafetensorsFile

METADATA_KEY = "lora_adapter_metadata"
FLOAT_DTYPES = (np.float16, np.float32, np.float64)

# key tails of adapter types minriff does not merge: (what it is, regex on the key)
UNSUPPORTED = [
    ("LoHa", r".*\.hada_(w[12]_[ab]|t[12])"),
    ("LoKr", r".*\.lokr_(w[12](_[ab])?|t[12])"),
    ("DoRA", r".*\.(dora_scale|lora_magnitude_vector(\.weight)?)"),
    ("IA3", r".*\.(on_input|ia3_l(\.weight)?)"),
    ("GLoRA", r".*\.(a1|a2|b1|b2)\.weight"),
    ("OFT/BOFT", r".*\.(oft_blocks|oft_diag|oft_r(\.weight)?|boft_R|boft_s)"),
    ("LoCon with Tucker decomposition (lora_mid)", r".*\.lora_mid\.weight"),
    ("full-weight difference (diff)", r".*\.diff(_b)?"),
    ("LoRA with a bias (lora_B.bias)", r".*\.(lora_B|lora_up|lora\.up)\.bias"),
    ("embedding LoRA", r".*\.lora_embedding_[AB]"),
    ("textual inversion embedding (not a LoRA)", r"(emb_params|string_to_param.*|string_to_token.*|bundle_emb\..*)"),
    ("SDXL (lora_te1_/lora_te2_/text_encoder_2)", r"(lora_te[12]_|text_encoder_2\.).*"),
    ("SD3/Flux transformer", r"(lora_transformer_|transformer\.).*"),
]
UNSUPPORTED = [(name, re.compile(rx)) for name, rx in UNSUPPORTED]

# (regex with groups (module ref, role), format) for the down/up keys
PAIR_KEYS = [
    (re.compile(r"(.+)\.lora_(down|up)\.weight"), "kohya"),
    (re.compile(r"(.+)\.lora_([AB])\.weight"), "peft"),
    (re.compile(r"(.+)\.lora\.(down|up)\.weight"), "diffusers"),
    (re.compile(r"(.+)\.lora_linear_layer\.(down|up)\.weight"), "diffusers-attn-procs"),
    (re.compile(r"(.+?)(?:\.processor)?\.(to_[qkv]_lora|to_out_lora)\.(down|up)\.weight"), "diffusers-attn-procs"),
]
ROLE = {"down": "down", "up": "up", "A": "down", "B": "up"}
UNET_PROC = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}
TE_PROC = {"to_q_lora": "q_proj", "to_k_lora": "k_proj", "to_v_lora": "v_proj", "to_out_lora": "out_proj"}


@dataclass(frozen=True)
class LoraLayer:
    """One low-rank update W += scale * up @ down (down (r, in[, kh, kw]), up (out, r[, 1, 1]))."""
    target: Target
    down: np.ndarray
    up: np.ndarray
    alpha: float
    keys: tuple  # (down key, up key) in the file
    rslora: bool = False

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    @property
    def parameters(self) -> int:
        return int(self.down.size + self.up.size)

    def delta(self, factor: float) -> np.ndarray:
        """factor * up @ down in float32, shaped like the layer's weight (for a conv:
        ΔW[o, i, y, x] = Σ_r up[o, r] · down[r, i, y, x])."""
        out = self.target.shape[0]
        up = self.up.reshape(out, self.rank).astype(np.float32) * np.float32(factor)  # (out, r)
        down = self.down.reshape(self.rank, -1).astype(np.float32, copy=False)  # (r, in·kh·kw)
        return (up @ down).reshape(self.target.shape)


@dataclass
class LoraFile:
    path: Path
    format: str  # "kohya", "peft", ... ("+"-joined when a file mixes them)
    layers: list
    metadata: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # keys that matched no layer (strict=False)

    @property
    def parameters(self) -> int:
        return sum(layer.parameters for layer in self.layers)

    def counts(self) -> dict:
        out = {}
        for layer in self.layers:
            out[layer.target.component] = out.get(layer.target.component, 0) + 1
        return out


def read_lora(path, targets: Targets, strict: bool = True) -> LoraFile:
    path = Path(path)
    tensors, metadata = _read_raw(path)
    _refuse_unsupported(tensors, path)
    pairs, alphas, formats, unknown = {}, {}, set(), []
    for key in tensors:
        parsed = _parse_pair_key(key, targets)
        if parsed is not None:
            target, role, fmt = parsed
            if target is None:
                unknown.append(key)
                continue
            slot = pairs.setdefault(target, {})
            if role in slot:
                raise WeightsError(f"{path}: two LoRA {role} matrices for {target.label}: {slot[role]} and {key}")
            slot[role] = key
            formats.add(fmt)
        elif key.endswith(".alpha"):
            target = _alpha_target(key[:-len(".alpha")], targets)
            if target is None:
                unknown.append(key)
            else:
                alphas[target] = key
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:12]) + (f", ... ({len(unknown) - 12} more)" if len(unknown) > 12 else "")
        msg = f"{path}: {len(unknown)} keys match no layer of minriff's text encoder / UNet: {shown}"
        if strict:
            raise WeightsError(msg + " (a LoRA for another model? strict=False skips them)")
        warnings.warn(msg + "; skipped", stacklevel=3)
    for target, key in alphas.items():
        if target not in pairs:
            raise WeightsError(f"{path}: {key} has no lora_down/lora_up pair")
    config = _adapter_config(metadata, path)
    layers = [_layer(path, target, slot, tensors, alphas.get(target), config) for target, slot in pairs.items()]
    if not layers:
        raise WeightsError(f"{path}: no LoRA layers (no lora_down/lora_up or lora_A/lora_B pairs)")
    return LoraFile(path, "+".join(sorted(formats)), layers, metadata, unknown)


# ----------------------------------------------------------------------------- reading


def _read_raw(path: Path) -> tuple[dict, dict]:
    """name -> array (or a plain number, from a pickle) and the header metadata."""
    if not path.is_file():
        raise WeightsError(f"LoRA file {path} not found" if not path.exists() else f"{path} is not a file")
    if torchpickle.checkpoint_kind(path):
        obj = torchpickle.load(path)
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a dict of LoRA tensors")
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str) or not isinstance(v, (torchpickle.LazyTensor, int, float)) or isinstance(v, bool):
                raise WeightsError(f"{path}: entry {k!r} holds a {type(v).__name__}, not a tensor")
            out[k] = v.numpy() if isinstance(v, torchpickle.LazyTensor) else v
        return out, {}
    st = SafetensorsFile(path)
    return {k: st[k] for k in st}, dict(st.metadata)


def _refuse_unsupported(tensors: dict, path: Path) -> None:
    found = {}
    for key in tensors:
        for name, rx in UNSUPPORTED:
            if rx.fullmatch(key):
                found.setdefault(name, []).append(key)
                break
    if found:
        kinds = "; ".join(f"{name}: {len(keys)} keys such as {', '.join(keys[:4])}" for name, keys in found.items())
        raise WeightsError(f"{path}: unsupported LoRA type {kinds}; minriff merges plain LoRA / LoCon "
                           "(lora_down/lora_up, lora_A/lora_B)")


def _parse_pair_key(key: str, targets: Targets):
    """(target or None, "down"/"up", format) for a down/up key; None for any other key."""
    for rx, fmt in PAIR_KEYS:
        m = rx.fullmatch(key)
        if m is None:
            continue
        if len(m.groups()) == 3:  # attention-processor names: the projection is in the key's tail
            base = _resolve(m[1], targets)
            proc = TE_PROC if base and base[0] == "text_encoder" else UNET_PROC
            ref, role = f"{m[1]}.{proc[m[2]]}", m[3]
        else:
            ref, role = m[1], m[2]
        found = _resolve(ref, targets)
        return (targets.find(*found) if found else None), ROLE[role], fmt
    return None


def _alpha_target(ref: str, targets: Targets):
    """`<module>.alpha`, or `<down key>.alpha` (what diffusers' converter writes)."""
    parsed = _parse_pair_key(ref, targets)
    if parsed is not None:
        return parsed[0]
    found = _resolve(ref, targets)
    return targets.find(*found) if found else None


def _resolve(ref: str, targets: Targets):
    """A module reference as written in a file -> (component, path), or None."""
    if ref.startswith(("lora_unet_", "lora_te_")):
        t = targets.kohya.get(ref)
        return (t.component, t.module) if t else None
    for prefix, comp in (("unet.", "unet"), ("text_encoder.", "text_encoder")):
        if ref.startswith(prefix):
            return comp, ref[len(prefix):]
    if ref.split(".")[0] in targets.unet_roots:
        return "unet", ref
    if ref.startswith("text_model."):
        return "text_encoder", ref
    return None


# ----------------------------------------------------------------------------- checking one layer


def _layer(path, target: Target, slot: dict, tensors: dict, alpha_key, config: dict) -> LoraLayer:
    for role, other in (("down", "up"), ("up", "down")):
        if role not in slot:
            raise WeightsError(f"{path}: {slot[other]} has no {role} half (the pair for {target.label} is incomplete)")
    down = _float_tensor(path, slot["down"], tensors[slot["down"]])
    up = _float_tensor(path, slot["up"], tensors[slot["up"]])
    _check_shapes(path, target, slot, down, up)
    comp_cfg = config.get(target.component, {})
    if comp_cfg.get("use_dora"):
        raise WeightsError(f"{path}: unsupported LoRA type DoRA ({METADATA_KEY} says use_dora for {target.component})")
    if alpha_key is not None:
        alpha = _alpha_value(path, alpha_key, tensors[alpha_key])
        alpha = alpha if alpha != 0 else float(down.shape[0])  # kohya-ss: 0 means unset
    else:
        alpha = _metadata_alpha(path, target, comp_cfg, down.shape[0])
    return LoraLayer(target, down, up, alpha, (slot["down"], slot["up"]), bool(comp_cfg.get("use_rslora")))


def _float_tensor(path, key: str, value) -> np.ndarray:
    a = np.asarray(value) if not isinstance(value, (int, float)) else None
    if a is None or a.dtype.type not in FLOAT_DTYPES:
        what = type(value).__name__ if a is None else a.dtype
        raise WeightsError(f"{path}: {key} is {what}; LoRA matrices must be floating point (F16, BF16, F32, F64)")
    if not np.isfinite(a).all():
        raise WeightsError(f"{path}: {key} holds NaN or infinite values")
    return off_heap(a)  # a copy: the file may change or go away while the LoRA stays loaded


def off_heap(a: np.ndarray, dtype=None) -> np.ndarray:
    """A read-only copy of `a` (cast to `dtype`) in its own anonymous memory map, so freeing it gives
    the memory back to the system at once: minriff has malloc keep big arrays on its heap
    (minriff/__init__.py), where a freed block in the middle stays with the process."""
    dtype = np.dtype(dtype or a.dtype)
    if a.size == 0:
        return np.zeros(a.shape, dtype)
    out = np.frombuffer(mmap.mmap(-1, a.size * dtype.itemsize), dtype=dtype).reshape(a.shape)
    out[...] = a
    out.flags.writeable = False
    return out


def _check_shapes(path, target: Target, slot: dict, down: np.ndarray, up: np.ndarray) -> None:
    out, cin, kernel = target.shape[0], target.shape[1], target.kernel
    kd, ku = slot["down"], slot["up"]
    if down.ndim not in (2, 4) or up.ndim not in (2, 4) or down.shape[0] < 1:
        raise WeightsError(f"{path}: {kd} {down.shape} / {ku} {up.shape}: a LoRA pair is 2-D or 4-D with rank >= 1")
    if up.shape[1] != down.shape[0]:
        raise WeightsError(f"{path}: rank mismatch for {target.label}: {kd} has rank {down.shape[0]}, "
                           f"{ku} has {up.shape[1]}")
    if up.ndim == 4 and up.shape[2:] != (1, 1):
        raise WeightsError(f"{path}: {ku} {up.shape}: the up matrix of a conv LoRA must be 1x1")
    down_kernel = tuple(down.shape[2:]) or (1, 1)
    if up.shape[0] != out or down.shape[1] != cin or down_kernel != kernel:
        raise WeightsError(f"{path}: {kd} {down.shape} / {ku} {up.shape} do not fit {target.label} "
                           f"(weight {target.shape}); a LoRA for another model (SD 2.x, SDXL)?")


def _alpha_value(path, key: str, value) -> float:
    a = np.asarray(value)
    if a.dtype.kind not in "fiu" or a.size != 1 or a.ndim > 1:
        raise WeightsError(f"{path}: {key} must be one number, got {a.dtype} of shape {a.shape}")
    alpha = float(a.reshape(()))
    if not math.isfinite(alpha) or alpha < 0:
        raise WeightsError(f"{path}: {key} = {alpha}: alpha must be a finite number >= 0")
    return alpha


def _adapter_config(metadata: dict, path) -> dict:
    """component -> LoraConfig fields, from the `lora_adapter_metadata` header entry."""
    raw = metadata.get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        flat = json.loads(raw)
    except ValueError as e:
        raise WeightsError(f"{path}: header metadata {METADATA_KEY} is not JSON ({e})") from None
    if not isinstance(flat, dict):
        raise WeightsError(f"{path}: header metadata {METADATA_KEY} is not a JSON object")
    out = {}
    for k, v in flat.items():
        comp, _, name = str(k).partition(".")
        if comp in ("unet", "text_encoder") and name:
            out.setdefault(comp, {})[name] = v
    return out


def _metadata_alpha(path, target: Target, cfg: dict, rank: int) -> float:
    pattern = cfg.get("alpha_pattern") or {}
    if not isinstance(pattern, dict):
        raise WeightsError(f"{path}: {METADATA_KEY}: {target.component}.alpha_pattern is not an object")
    names = (target.module, target.module.removeprefix("text_model."))
    alpha = cfg.get("lora_alpha", rank)
    where = f"{target.component}.lora_alpha"
    for key, value in pattern.items():  # PEFT: a pattern matches a whole module name or a dotted suffix of it
        try:
            if any(re.match(rf"(.*\.)?({key})$", n) for n in names):
                alpha, where = value, f"{target.component}.alpha_pattern[{key!r}]"
                break
        except re.error as e:
            raise WeightsError(f"{path}: {METADATA_KEY}: alpha_pattern key {key!r} is not a regex ({e})") from None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise WeightsError(f"{path}: {METADATA_KEY}: {where} = {alpha!r}; alpha must be a finite number > 0")
    return float(alpha)
