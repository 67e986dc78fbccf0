"""ControlNet weights on disk: converting the published layouts into minriff's own ControlNet file.

File: safetensors, tensors `controlnet.<diffusers key>`, metadata as the main file's (`format`
"minriff-1", JSON strings) with `config` = {"controlnet": <ControlNetModel config.json values>} and
`source`. `format.file_kind` tells it apart ("controlnet"), so it never shadows the main file.

Sources (`read_controlnet_source`):
- a diffusers folder (e.g. lllyasviel/sd-controlnet-canny, lllyasviel/control_v11p_sd15_canny):
  config.json (`_class_name` ControlNetModel) + diffusion_pytorch_model.safetensors / .bin;
- the original single files of github.com/lllyasviel/ControlNet(-v1-1-nightly), `.pth` (read by
  torchpickle's restricted unpickler) or `.safetensors`:
  - `control_sd15_*.pth`: the whole LDM (`model.diffusion_model.*`, `first_stage_model.*`,
    `cond_stage_model.*`) plus `control_model.*`; only `control_model.*` is kept;
  - `control_v11*_sd15_*.pth` / `.safetensors` and other standalone files: the control model's keys
    with or without the `control_model.` prefix;
  - a lone diffusers-layout weights file (`controlnet_cond_embedding.*` keys).
  Single files hold no config: SD 1.5's (configs.CONTROLNET_PRESETS["sd15"]) unless `config=` names
  a preset or a diffusers ControlNet folder / config.json.

The original keys map as the UNet's encoder in an LDM file (convert.ldm_unet_key), plus
`zero_convs.k.0` -> `controlnet_down_blocks.k`, `middle_block_out.0` -> `controlnet_mid_block` and
`input_hint_block.{0, 2, 4, ..., 2n}` -> `controlnet_cond_embedding.conv_in`, `.blocks.{0..n-2}`,
`.conv_out` (the odd indices are SiLUs). Every key maps or the file is refused, naming the keys.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from minriff import atomic
from minriff.configs import CONTROLNET_PRESETS, ConfigError, ControlNetConfig
from minriff.errors import WeightsError
from minriff.models import nn, random_controlnet
from minriff.models.controlnet import ControlNetModel
from minriff.weights.convert import Ref, _read_json, ldm_unet_key, read_component, read_tensor_file
from minriff.weights.format import SingleModelFile, write_single_model
from minriff.weights.safetensors import SafetensorsFile

PREFIX = "controlnet."
ORIGINAL_PREFIX = "control_model."
HOW_TO_GET = ("convert a ControlNet with `minriff convert SRC -o weights/controlnet_NAME.safetensors`: a diffusers "
              "folder (e.g. lllyasviel/sd-controlnet-canny) or an original control_sd15_*.pth / "
              "control_v11*_sd15_*.pth file")


# ----------------------------------------------------------------------------- reading sources


def _folder_config(src: Path) -> dict | None:
    cfg = src / "config.json" if src.is_dir() else None
    if cfg is None or not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_controlnet_source(src) -> bool:
    """A diffusers ControlNet folder, or a single file holding a ControlNet (by its keys)."""
    src = Path(src)
    if src.is_dir():
        return (_folder_config(src) or {}).get("_class_name") == "ControlNetModel"
    if not src.is_file():
        return False
    try:
        keys = read_tensor_file(src)
    except WeightsError:
        return False
    return _layout(keys) is not None


def _layout(keys) -> str | None:
    """"diffusers", "original" (prefix stripped later) or None."""
    if "controlnet_cond_embedding.conv_in.weight" in keys:
        return "diffusers"
    if any(k.startswith(ORIGINAL_PREFIX + "input_hint_block.") or k.startswith("input_hint_block.") for k in keys):
        return "original"
    return None


def hint_key(index: int, n_blocks: int) -> str | None:
    """input_hint_block index -> controlnet_cond_embedding module (even indices; odd ones are SiLUs)."""
    if index % 2:
        return None
    i = index // 2
    if i == 0:
        return "conv_in"
    if i <= n_blocks:
        return f"blocks.{i - 1}"
    return "conv_out" if i == n_blocks + 1 else None


def original_key(key: str, config: ControlNetConfig) -> str | None:
    """An original ControlNet key (without `control_model.`) -> diffusers key, or None if unknown."""
    m = re.fullmatch(r"zero_convs\.(\d+)\.0\.(weight|bias)", key)
    if m:
        return f"controlnet_down_blocks.{m[1]}.{m[2]}"
    m = re.fullmatch(r"middle_block_out\.0\.(weight|bias)", key)
    if m:
        return f"controlnet_mid_block.{m[1]}"
    m = re.fullmatch(r"input_hint_block\.(\d+)\.(weight|bias)", key)
    if m:
        name = hint_key(int(m[1]), 2 * (len(config.conditioning_embedding_out_channels) - 1))
        return name and f"controlnet_cond_embedding.{name}.{m[2]}"
    if key.startswith(("output_blocks.", "out.")):
        return None  # a ControlNet has no up path
    return ldm_unet_key(key, config.layers_per_block)


def _single_file_config(config, where) -> dict:
    """The config of a single file: a preset name, a diffusers folder or config.json, default sd15."""
    if config is None or config in CONTROLNET_PRESETS:
        return dict(CONTROLNET_PRESETS[config or "sd15"].to_dict(), _class_name="ControlNetModel")
    p = Path(config)
    p = p / "config.json" if p.is_dir() else p
    if not p.is_file():
        raise WeightsError(f"--config {config}: neither a ControlNet preset ({', '.join(CONTROLNET_PRESETS)}) nor a "
                           "diffusers ControlNet folder or config.json")
    data = _read_json(p, "ControlNet config")
    if data.get("_class_name", "ControlNetModel") != "ControlNetModel":
        raise WeightsError(f"{p} describes a {data['_class_name']}, not a ControlNetModel")
    return data


def read_controlnet_source(src, config=None) -> tuple[dict, dict[str, Ref], dict]:
    """(config dict, {diffusers key: Ref}, source description) of a ControlNet source (module docstring)."""
    src = Path(src)
    if not src.exists():
        raise WeightsError(f"{src}: no such file or folder")
    if src.is_dir():
        cfg = _folder_config(src)
        if cfg is None or cfg.get("_class_name") != "ControlNetModel":
            raise WeightsError(f"{src}: not a diffusers ControlNet folder (config.json with _class_name "
                               "ControlNetModel)")
        if config is not None:
            raise WeightsError("--config applies to single-file ControlNets; a diffusers folder brings its own")
        tensors, fname = read_component(src, ("diffusion_pytorch_model", "diffusion_pytorch_model.fp16"))
        return cfg, tensors, {"type": "diffusers-controlnet", "path": str(src), "file": fname}
    raw = read_tensor_file(src)
    layout = _layout(raw)
    if layout is None:
        raise WeightsError(f"{src}: not a ControlNet (no input_hint_block / controlnet_cond_embedding weights)")
    cfg = _single_file_config(config, src)
    if layout == "diffusers":
        return cfg, raw, {"type": "diffusers-controlnet-file", "path": str(src)}
    prefixed = any(k.startswith(ORIGINAL_PREFIX) for k in raw)
    keys = {k[len(ORIGINAL_PREFIX):]: v for k, v in raw.items() if k.startswith(ORIGINAL_PREFIX)} if prefixed else raw
    parsed = _parsed(cfg, src)
    out, unmapped = {}, []
    for k, v in keys.items():
        new = original_key(k, parsed)
        if new is None:
            unmapped.append(k)
        else:
            out[new] = v
    if unmapped:
        raise WeightsError(f"{src}: {len(unmapped)} ControlNet keys have no diffusers counterpart with the assumed "
                           f"config (layers_per_block={parsed.layers_per_block}; pass --config to match the file): "
                           + ", ".join(unmapped[:10]))
    source = {"type": "original-controlnet", "path": str(src), "ignored": len(raw) - len(keys)}
    return cfg, out, source


def _parsed(config: dict, where) -> ControlNetConfig:
    try:
        return ControlNetConfig.from_dict(config)
    except ConfigError as e:
        raise WeightsError(f"{where}: {e}") from None


# ----------------------------------------------------------------------------- writing, converting


def write_controlnet(out, tensors: dict, config: dict, source: dict | None = None, dtype: str = "fp16") -> int:
    """Write a ControlNet file. `tensors`: {diffusers key: (shape, read[, release])}; `config`: the
    ControlNetModel config dict (stored without diffusers' `_` bookkeeping keys)."""
    return write_single_model(out, "controlnet", PREFIX, tensors, config, source, dtype)


def convert_controlnet(src, out, dtype: str = "fp16", config=None, log=None) -> int:
    """A ControlNet source -> minriff's ControlNet file; every key and shape checked against the
    model its config builds. Returns the number of tensors written."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    atomic.check_target(out)
    cfg, tensors, source = read_controlnet_source(src, config)
    report = nn.fit_report(ControlNetModel(_parsed(cfg, src)).parameter_shapes(), tensors)
    if report:
        raise WeightsError(f"{src}: weights do not fit the ControlNet its config describes: {report}")
    n = write_controlnet(out, {k: (r.shape, r.read, r.release) for k, r in tensors.items()}, cfg, source, dtype)
    if source.get("ignored"):
        log(f"note: kept the {n} control_model.* tensors; ignored {source['ignored']} others (the base model)")
    log(f"wrote {n} ControlNet tensors ({dtype}) to {out}")
    return n


def write_random_controlnet(out, config: str = "sd15", dtype: str = "fp16", seed: int = 0) -> int:
    """Random ControlNet weights (`models.random_controlnet`), for benchmarks and tests."""
    model = random_controlnet(config, seed=seed)
    tensors = {k: (p.shape, lambda p=p: p) for k, p in model.named_parameters()}
    source = {"type": "random", "config": config, "seed": seed, "note": "random ControlNet weights; for tests only"}
    return write_controlnet(out, tensors, model.config.to_dict(), source, dtype)


# ----------------------------------------------------------------------------- loading


class ControlNetFile(SingleModelFile):
    prefix = PREFIX

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"{self.path}: no such ControlNet file")
        try:
            self.tensors = SafetensorsFile(path)
        except WeightsError as e:
            raise WeightsError(f"{self.path} is not a minriff ControlNet file ({e}); {HOW_TO_GET}") from None
        config, self.source = self._read_header("controlnet", "ControlNet", HOW_TO_GET)
        self.config = _parsed(config, self.path)

    def load(self, dtype=None) -> ControlNetModel:
        """The model, weights held as stored (dtype None: fp16 files stay fp16, computing in float32)
        or cast to `dtype`."""
        tensors = {key: self.tensors[PREFIX + key] for key in self.tensor_names()}
        return nn.load(ControlNetModel(self.config), tensors, what="ControlNet", dtype=dtype)


def load_controlnet(path, dtype=None) -> ControlNetModel:
    """A converted ControlNet file -> ControlNetModel (for `Riffusion.generate_spectrogram(controls=...)`)."""
    return ControlNetFile(path).load(dtype)
