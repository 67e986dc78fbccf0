"""Shared by the LoRA tests: the tiny pipeline of tests/fixtures/pipeline/, the layers a LoRA may
target in it (found with regexes on its parameter names, not with minriff's lookup table), random
kohya-format LoRAs for them, renamings into the other formats, and a NumPy reference merge.

The committed LoRA fixtures and their diffusers results come from tests/fixtures/make_lora.py (`ml`)."""
from __future__ import annotations

import json
import re

import numpy as np

from support import fixture_script

ml = fixture_script("make_lora")
mp = fixture_script("make_pipeline")

PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te_"}


def tiny_riff():
    from minriff import Riffusion

    return Riffusion.load(mp.WEIGHTS, quiet=True)


def layer_shapes(riff) -> dict[tuple[str, str], tuple]:
    """(component, module) -> weight shape of the layers kohya/LoCon train (make_lora's regexes)."""
    out = {}
    for comp, pattern in (("unet", ml.UNET_TARGETS), ("text_encoder", ml.TE_TARGETS)):
        for key, p in getattr(riff, comp).named_parameters():
            module = key.removesuffix(".weight")
            if key.endswith(".weight") and p.ndim in (2, 4) and pattern.fullmatch(module):
                out[comp, module] = tuple(p.shape)
    return out


def kohya_name(comp: str, module: str) -> str:
    return PREFIX[comp] + module.replace(".", "_")


def random_kohya(shapes: dict, seed: int = 0, rank: int = 3, alpha=None, dtype=np.float32) -> dict:
    """A kohya LoRA on `shapes`; alpha(comp, module) -> float or None (no .alpha key)."""
    rng = np.random.default_rng(seed)
    sd = {}
    for (comp, module), shape in sorted(shapes.items()):
        r = min(rank, shape[0])
        down = rng.standard_normal((r, *shape[1:])) / np.sqrt(np.prod(shape[1:]))
        up = rng.standard_normal((shape[0], r) + ((1, 1) if len(shape) == 4 else ())) * 0.1
        key = kohya_name(comp, module)
        sd[key + ".lora_down.weight"], sd[key + ".lora_up.weight"] = down.astype(dtype), up.astype(dtype)
        a = alpha(comp, module) if alpha else None
        if a is not None:
            sd[key + ".alpha"] = np.array(a, dtype=np.float32)
    return sd


def save(path, sd: dict, metadata: dict | None = None):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(path), metadata=metadata)
    return path


def pairs(sd: dict) -> dict:
    """kohya dict -> {kohya name: (down, up, alpha or None)}."""
    out = {}
    for k in sd:
        if k.endswith(".lora_down.weight"):
            name = k.removesuffix(".lora_down.weight")
            alpha = sd.get(name + ".alpha")
            out[name] = (sd[k], sd[name + ".lora_up.weight"], None if alpha is None else float(alpha))
    return out


def to_peft(sd: dict, shapes: dict, text_model_prefix: bool = True) -> tuple[dict, dict]:
    """The same LoRA in diffusers/PEFT keys, alphas as `lora_adapter_metadata` alpha_pattern entries."""
    names = {kohya_name(c, m): (c, m) for c, m in shapes}
    out, meta = {}, {}
    for name, (down, up, alpha) in pairs(sd).items():
        comp, module = names[name]
        if comp == "text_encoder" and not text_model_prefix:
            module = module.removeprefix("text_model.")
        out[f"{comp}.{module}.lora_A.weight"], out[f"{comp}.{module}.lora_B.weight"] = down, up
        meta.setdefault(f"{comp}.alpha_pattern", {})[re.escape(module)] = alpha if alpha is not None else down.shape[0]
        meta[f"{comp}.lora_alpha"] = 1.0  # overridden for every layer by its alpha_pattern entry
    return out, {"lora_adapter_metadata": json.dumps(meta)}


ATTN_PROC = {"to_q": "to_q_lora", "to_k": "to_k_lora", "to_v": "to_v_lora", "to_out.0": "to_out_lora",
             "q_proj": "to_q_lora", "k_proj": "to_k_lora", "v_proj": "to_v_lora", "out_proj": "to_out_lora"}


def to_old_diffusers(sd: dict, shapes: dict, unet_prefix: bool = True) -> dict:
    """Older diffusers names: attention processors (`attn1.processor.to_q_lora.down.weight`, text
    encoder `self_attn.to_q_lora...`, `mlp.fc1.lora_linear_layer...`), `conv1.lora.down.weight`
    elsewhere; alphas as `<down key>.alpha` (what diffusers' kohya converter produces)."""
    names = {kohya_name(c, m): (c, m) for c, m in shapes}
    out = {}
    for name, (down, up, alpha) in pairs(sd).items():
        comp, module = names[name]
        parent, _, leaf = module.rpartition(".")
        if module.endswith("to_out.0"):
            parent, leaf = module[:-len(".to_out.0")], "to_out.0"
        if leaf in ATTN_PROC and comp == "unet":
            stem = f"{parent}.processor.{ATTN_PROC[leaf]}"
        elif leaf in ATTN_PROC:
            stem = f"{parent}.{ATTN_PROC[leaf]}"
        elif comp == "text_encoder":
            stem = f"{module}.lora_linear_layer"
        else:
            stem = f"{module}.lora"
        prefix = "text_encoder." if comp == "text_encoder" else ("unet." if unet_prefix else "")
        out[f"{prefix}{stem}.down.weight"], out[f"{prefix}{stem}.up.weight"] = down, up
        if alpha is not None:
            out[f"{prefix}{stem}.down.weight.alpha"] = np.array(alpha, dtype=np.float32)
    return out


def reference_merge(base: np.ndarray, loras: list) -> np.ndarray:
    """float64: W0 + Σ w·(alpha/rank)·up@down, for loras = [(weight, down, up, alpha or None)]."""
    w = base.astype(np.float64)
    for weight, down, up, alpha in loras:
        r = down.shape[0]
        a = r if alpha is None else alpha
        u = up.reshape(up.shape[0], r).astype(np.float64)
        w = w + weight * (a / r) * np.einsum("or,r...->o...", u, down.astype(np.float64))
    return w


def weight_of(riff, comp: str, module: str) -> np.ndarray:
    return dict(getattr(riff, comp).named_parameters())[module + ".weight"]
