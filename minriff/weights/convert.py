"""Turn real checkpoints into minriff's converted format (see weights.py).

Sources:
- a diffusers folder: `model_index.json`, `unet/ vae/ text_encoder/ tokenizer/ scheduler/`, weights as
  `*.safetensors` or torch `*.bin` (also sharded `*.index.json`);
- an original (LDM / CompVis) single file, `.ckpt` (torch zip pickle) or `.safetensors`, with keys
  `model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`.
  Such files hold no configs, tokenizer or scheduler: the SD v1.5 configs and PNDM scheduler are
  assumed unless `config=` names a preset or a diffusers folder, and the tokenizer comes from
  `tokenizer=` (otherwise none is stored and generation asks for one).
  EMA copies (`model_ema.*`): like diffusers' converter (`extract_ema=False` by default) the
  non-EMA UNet weights are used unless `ema=True`.

This is the only module that knows other naming schemes. The LDM -> diffusers key mapping was
established from diffusers' `loaders/single_file_utils.py` (facts: which LDM sub-layer is which
diffusers layer), implemented here as per-key rewrite rules so that every key either maps or is
reported.
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minriff import atomic, schedulers
from minriff.configs import (
    PRESETS,
    SD15_SCHEDULER,
    ConfigError,
    ModelConfig,
    check_model_config,
)
from minriff.errors import UnsupportedModelError, WeightsError
from minriff.models import nn
from minriff.models.init import COMPONENTS, build_models
from minriff.models.tokenizer import CLIPTokenizer
from minriff.weights import hub, sniff, torchpickle
from minriff.weights.format import check_vocab, write_weights
from minriff.weights.safetensors import SafetensorsFile


class Ref:
    """A tensor not read yet: its shape and how to read it (as a NumPy array)."""

    def __init__(self, shape, read: Callable[[], np.ndarray], release: Callable[[], None] = lambda: None):
        self.shape, self.read, self.release = tuple(shape), read, release

    def reshaped(self, shape) -> Ref:
        return Ref(shape, lambda: np.asarray(self.read()).reshape(shape), self.release)


@dataclass
class Checkpoint:
    tensors: dict = field(default_factory=dict)  # component -> {diffusers key: Ref}
    configs: dict = field(default_factory=dict)  # component -> config dict
    vocab: dict | None = None
    merges: list | None = None
    scheduler_config: dict = field(default_factory=lambda: dict(SD15_SCHEDULER))
    source: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


# ----------------------------------------------------------------------------- tensor files


def read_tensor_file(path, inert_globals: bool = False) -> dict[str, Ref]:
    """name -> Ref for a safetensors file or a torch checkpoint (told apart by content)."""
    path = Path(path)
    kind = sniff.file_kind(path)
    if kind is None:
        raise WeightsError(f"{path}: neither a safetensors file nor a torch checkpoint ({sniff.describe(path)})")
    if kind != "safetensors":
        sd = torchpickle.state_dict(torchpickle.load(path, inert_unknown=inert_globals), str(path))
        return {k: Ref(t.shape, t.numpy, t.release) for k, t in sd.items()}
    st = SafetensorsFile(path)
    if "minriff" in st.metadata.get("format", ""):  # (transformers writes format "pt")
        raise WeightsError(f"{path} is already a converted minriff file")
    return {k: Ref(st.shape(k), lambda k=k: st[k], lambda k=k: st.release(k)) for k in st}


def read_component(folder: Path, stems: tuple[str, ...]) -> tuple[dict[str, Ref], str]:
    """Weights of one diffusers component folder: first existing of stem.safetensors, stem.bin, sharded."""
    for stem in stems:
        for ext in (".safetensors", ".bin"):
            if (folder / (stem + ext)).is_file():
                return read_tensor_file(folder / (stem + ext)), stem + ext
            index = folder / (stem + ext + ".index.json")
            if index.is_file():
                return _read_sharded(index), index.name
    raise WeightsError(f"{folder}: no weights file ({', '.join(s + '.safetensors/.bin' for s in stems)})")


def _read_sharded(index: Path) -> dict[str, Ref]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise WeightsError(f"{index}: unreadable shard index ({type(e).__name__}: {e})") from None
    for shard in shards:  # names of files beside the index, never paths elsewhere
        if not isinstance(shard, str) or Path(shard).name != shard or shard in (".", ".."):
            raise WeightsError(f"{index}: shard {shard!r} is not a file name in {index.parent}")
    out = {}
    for shard in shards:
        out.update(read_tensor_file(index.parent / shard))
    return out


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{what}: {path} is missing") from None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise WeightsError(f"{what}: cannot read {path}: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{what}: {path} is not a JSON object")
    return data


def read_tokenizer(path) -> tuple[dict, list]:
    """(vocab, merges) from a tokenizer folder, a diffusers root, or a tokenizer.json file."""
    p = Path(path)
    if p.is_dir() and (p / "tokenizer").is_dir():
        p = p / "tokenizer"
    if p.is_file():
        tok = tokenizer_from_json(p)
    elif (p / "vocab.json").is_file() and (p / "merges.txt").is_file():
        tok = tokenizer_from_files(p / "vocab.json", p / "merges.txt")
    elif (p / "tokenizer.json").is_file():
        tok = tokenizer_from_json(p / "tokenizer.json")
    else:
        raise WeightsError(f"{path}: no CLIP tokenizer (vocab.json + merges.txt, or tokenizer.json)")
    return tok.vocab, tok.merges


def tokenizer_from_files(vocab_json_path, merges_txt_path) -> CLIPTokenizer:
    """The layout of the real Riffusion upload: vocab.json + merges.txt (first line may be '#version')."""
    vocab = _read_tokenizer_json(vocab_json_path, "vocab.json")
    try:
        lines = Path(merges_txt_path).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise WeightsError(f"cannot read tokenizer merges file {merges_txt_path}: {e}") from None
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    return CLIPTokenizer(vocab, [ln for ln in lines if ln.strip()], where=str(merges_txt_path))


def tokenizer_from_json(path) -> CLIPTokenizer:
    """What transformers 5 writes: one tokenizer.json, vocab and merges under its `model` key."""
    data = _read_tokenizer_json(path, "tokenizer.json")
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or "vocab" not in model or "merges" not in model:
        raise WeightsError(f"{path}: not a BPE tokenizer.json (no model.vocab / model.merges)")
    return CLIPTokenizer(model["vocab"], model["merges"], where=str(path))


def _read_tokenizer_json(path, what: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WeightsError(f"cannot read tokenizer {what} {path}: {type(e).__name__}: {e}") from None


# ----------------------------------------------------------------------------- diffusers folders

WEIGHT_STEMS = hub.COMPONENT_WEIGHTS  # file names without .safetensors / .bin, first found wins


def read_diffusers(folder) -> Checkpoint:
    root = Path(folder)
    index = _read_json(root / "model_index.json", "diffusers folder") if (root / "model_index.json").exists() else {}
    _refuse_pipeline(index, root)
    ck = Checkpoint(source={"type": "diffusers", "path": str(root), "pipeline": index.get("_class_name")})
    for comp in COMPONENTS:
        sub = root / comp
        if not sub.is_dir():
            raise WeightsError(f"{root}: not a diffusers folder (no {comp}/ subfolder)")
        ck.configs[comp] = _read_json(sub / "config.json", f"{comp} config")
        tensors, fname = read_component(sub, WEIGHT_STEMS[comp])
        ck.source[comp] = fname
        ck.tensors[comp] = NORMALIZE[comp](tensors)
    if (root / "scheduler" / "scheduler_config.json").exists():
        ck.scheduler_config = _read_json(root / "scheduler" / "scheduler_config.json", "scheduler config")
    else:
        ck.notes.append("no scheduler/scheduler_config.json: stored SD v1.5's PNDM scheduler config")
    if (root / "tokenizer").is_dir():
        ck.vocab, ck.merges = read_tokenizer(root / "tokenizer")
    else:
        ck.notes.append("no tokenizer/ folder: stored no tokenizer (generation will ask for one)")
    return ck


def _refuse_pipeline(index: dict, root: Path) -> None:
    name = str(index.get("_class_name", ""))
    if "XL" in name or "text_encoder_2" in index:
        raise UnsupportedModelError(f"{root}: {name or 'pipeline'} is Stable Diffusion XL, which minriff does not run "
                                    "(it runs SD v1.x / Riffusion)")
    if "Inpaint" in name or "Upscale" in name or "Depth" in name:
        raise UnsupportedModelError(f"{root}: {name} is not a text-to-image SD v1.x pipeline; unsupported")


def normalize_text_encoder(tensors: dict[str, Ref]) -> dict[str, Ref]:
    """`text_model.`-prefixed keys (transformers 5 writes them without); drop position_ids."""
    out = {}
    for k, v in tensors.items():
        key = k if k.startswith("text_model.") else "text_model." + k
        if key == "text_model.embeddings.position_ids":
            continue
        out[key] = v
    return out


OLD_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def normalize_vae(tensors: dict[str, Ref]) -> dict[str, Ref]:
    """VAE attention: old diffusers names -> to_q/to_k/to_v/to_out.0, and conv-shaped weights -> linear."""
    out = {}
    for k, v in tensors.items():
        m = re.fullmatch(r"(.*\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)", k)
        if m:
            k = m[1] + OLD_VAE_ATTENTION[m[2]] + "." + m[3]
        if re.fullmatch(r".*\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight", k) and len(v.shape) > 2:
            if any(d != 1 for d in v.shape[2:]):
                raise WeightsError(f"VAE attention weight {k} has shape {v.shape}, expected a 1x1 convolution")
            v = v.reshaped(v.shape[:2])
        out[k] = v
    return out


NORMALIZE = {"text_encoder": normalize_text_encoder, "unet": lambda t: dict(t), "vae": normalize_vae}


# ----------------------------------------------------------------------------- LDM single files

LDM_PREFIX = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
              "text_encoder": "cond_stage_model.transformer."}
UNET_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
               "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
UNET_FIXED = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
              "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out"}
VAE_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _resnet(rest: str, table: dict) -> str | None:
    layer, _, param = rest.rpartition(".")
    return f"{table[layer]}.{param}" if layer in table else None


def ldm_unet_key(key: str, layers_per_block: int) -> str | None:
    """LDM UNet key (without `model.diffusion_model.`) -> diffusers key, or None if unknown."""
    layer, _, param = key.rpartition(".")
    if layer in UNET_FIXED:
        return f"{UNET_FIXED[layer]}.{param}"
    per = layers_per_block + 1  # resnets (+ attentions) per down block, then one downsampler
    m = re.fullmatch(r"input_blocks\.(\d+)\.(\d)\.(.+)", key)
    if m and int(m[1]) >= 1:
        block, j = divmod(int(m[1]) - 1, per)
        if j == layers_per_block:
            return (f"down_blocks.{block}.downsamplers.0.conv.{m[3][3:]}"
                    if m[2] == "0" and m[3].startswith("op.") else None)
        if m[2] == "0":
            r = _resnet(m[3], UNET_RESNET)
            return r and f"down_blocks.{block}.resnets.{j}.{r}"
        return f"down_blocks.{block}.attentions.{j}.{m[3]}" if m[2] == "1" else None
    m = re.fullmatch(r"middle_block\.(\d)\.(.+)", key)
    if m:
        if m[1] in "02":
            r = _resnet(m[2], UNET_RESNET)
            return r and f"mid_block.resnets.{int(m[1]) // 2}.{r}"
        return f"mid_block.attentions.0.{m[2]}" if m[1] == "1" else None
    m = re.fullmatch(r"output_blocks\.(\d+)\.(\d)\.(.+)", key)
    if m:
        block, j = divmod(int(m[1]), per)
        if m[3].startswith("conv.") and m[2] in "12":
            return f"up_blocks.{block}.upsamplers.0.conv.{m[3][5:]}"
        if m[2] == "0":
            r = _resnet(m[3], UNET_RESNET)
            return r and f"up_blocks.{block}.resnets.{j}.{r}"
        return f"up_blocks.{block}.attentions.{j}.{m[3]}" if m[2] == "1" else None
    return None


def ldm_vae_key(key: str, num_blocks: int) -> str | None:
    """LDM VAE key (without `first_stage_model.`) -> diffusers key, or None if unknown."""
    if re.fullmatch(r"(quant_conv|post_quant_conv|(en|de)coder\.conv_(in|out))\.(weight|bias)", key):
        return key
    m = re.fullmatch(r"(encoder|decoder)\.norm_out\.(weight|bias)", key)
    if m:
        return f"{m[1]}.conv_norm_out.{m[2]}"
    resnet = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
    m = (re.fullmatch(r"encoder\.down\.(\d+)\.block\.(\d+)\.(.+)", key) or
         re.fullmatch(r"decoder\.up\.(\d+)\.block\.(\d+)\.(.+)", key))
    if m:
        r = _resnet(m[3], resnet)
        if key.startswith("encoder"):
            return r and f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{r}"
        return r and f"decoder.up_blocks.{num_blocks - 1 - int(m[1])}.resnets.{m[2]}.{r}"
    m = re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", key)
    if m:
        return f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}"
    m = re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", key)
    if m:
        return f"decoder.up_blocks.{num_blocks - 1 - int(m[1])}.upsamplers.0.conv.{m[2]}"
    m = re.fullmatch(r"(encoder|decoder)\.mid\.block_([12])\.(.+)", key)
    if m:
        r = _resnet(m[3], resnet)
        return r and f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{r}"
    m = re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)", key)
    if m:
        return f"{m[1]}.mid_block.attentions.0.{VAE_ATTENTION[m[2]]}.{m[3]}"
    return None


def refuse_unsupported_ldm(keys: dict[str, Ref], where) -> None:
    def has(prefix):
        return any(k.startswith(prefix) for k in keys)
    if has("conditioner.embedders"):
        raise UnsupportedModelError(f"{where}: Stable Diffusion XL checkpoint (conditioner.embedders.*); "
                                    "minriff runs SD v1.x / Riffusion only")
    if has("cond_stage_model.model."):
        raise UnsupportedModelError(f"{where}: Stable Diffusion 2.x checkpoint "
                                    "(OpenCLIP text encoder cond_stage_model.model.*); unsupported")
    if has("model.diffusion_model.label_emb"):
        raise UnsupportedModelError(f"{where}: UNet with class/label embeddings (SDXL or an upscaler); unsupported")
    conv_in = keys.get("model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is not None and len(conv_in.shape) == 4 and conv_in.shape[1] != 4:
        kind = {9: "an inpainting", 8: "an InstructPix2Pix",
                5: "a depth-to-image"}.get(conv_in.shape[1], "a non-text-to-image")
        raise UnsupportedModelError(f"{where}: the UNet takes {conv_in.shape[1]} input channels ({kind} model); "
                                    "minriff runs 4-channel text-to-image SD v1.x models")
    for k, v in keys.items():
        if k.startswith("model.diffusion_model.") and k.endswith("attn2.to_k.weight") and v.shape[-1] in (1024, 2048):
            family = "SD 2.x" if v.shape[-1] == 1024 else "SDXL"
            raise UnsupportedModelError(f"{where}: cross-attention width {v.shape[-1]} "
                                        f"({family}; SD v1.x has 768); unsupported")
        if k.startswith("model.diffusion_model.") and k.endswith(".proj_in.weight") and len(v.shape) == 2:
            raise UnsupportedModelError(f"{where}: linear transformer projections (SD 2.x style); unsupported")


def read_ldm(path, configs: dict, ema: bool = False, inert_globals: bool = False) -> Checkpoint:
    raw = read_tensor_file(path, inert_globals)
    refuse_unsupported_ldm(raw, path)
    ck = Checkpoint(configs=configs, source={"type": "ldm-single-file", "path": str(path)})
    has_ema = sum(k.startswith("model_ema.") for k in raw) > 100
    if ema and not has_ema:
        raise WeightsError(f"{path}: --ema asked for, but the checkpoint has no EMA weights (model_ema.*)")
    ck.source["ema"] = bool(ema)
    if has_ema and not ema:
        ck.notes.append("the checkpoint also holds EMA weights; used the non-EMA UNet like diffusers' converter does "
                        "by default (pass --ema for the EMA copy)")
    mappers = {"unet": lambda k: ldm_unet_key(k, configs["unet"].get("layers_per_block", 2)),
               "vae": lambda k: ldm_vae_key(k, len(configs["vae"].get("block_out_channels", (0,) * 4))),
               "text_encoder": lambda k: k}
    unmapped, ignored = [], 0
    for comp, prefix in LDM_PREFIX.items():
        out = {}
        for k, v in raw.items():
            if not k.startswith(prefix):
                continue
            new = mappers[comp](k[len(prefix):])
            if new is None:
                unmapped.append(k)
                continue
            if comp == "unet" and ema:
                flat = "model_ema." + "".join(k.split(".")[1:])  # diffusers' EMA naming: dots dropped
                if flat not in raw:
                    raise WeightsError(f"{path}: EMA copy {flat} of {k} is missing")
                v = raw[flat]
            out[new] = v
        if not out:
            raise WeightsError(f"{path}: no {comp} weights ({prefix}*): "
                               "not a Stable Diffusion v1.x single-file checkpoint")
        ck.tensors[comp] = NORMALIZE[comp](out)
    if unmapped:
        raise WeightsError(f"{path}: {len(unmapped)} keys have no diffusers counterpart with the assumed configs "
                           f"(UNet layers_per_block={configs['unet'].get('layers_per_block', 2)}; "
                           "pass --config to match the checkpoint): " + ", ".join(unmapped[:10]))
    ignored = sum(1 for k in raw if not any(k.startswith(p) for p in LDM_PREFIX.values()))
    if ignored:
        ck.notes.append(f"ignored {ignored} tensors outside the three models (EMA copies, schedule buffers, ...)")
    return ck


# ----------------------------------------------------------------------------- checks and output


def check_configs(configs: dict, scheduler: dict, where) -> ModelConfig:
    """The model and scheduler configs, by the checks loading runs too (`configs.check_model_config`,
    `schedulers.check_config`), after naming the model family when it is one minriff does not run."""
    if isinstance(scheduler, dict) and all(isinstance(configs.get(c), dict) for c in COMPONENTS):
        refuse_unsupported_configs(configs, scheduler, where)
    try:
        config = check_model_config(configs)
        schedulers.check_config(scheduler)
    except ConfigError as e:
        raise WeightsError(f"{where}: {e}") from None
    return config


def refuse_unsupported_configs(configs: dict, scheduler: dict, where) -> None:
    """Name the model family of the configs minriff does not run (SD 2.x, SDXL, inpainting, ...);
    other wrong values are left to `check_configs`' checks, which name the field."""
    unet = configs["unet"]
    if scheduler.get("prediction_type") == "v_prediction":
        raise UnsupportedModelError(f"{where}: v-prediction model (SD 2.x 768-v style); "
                                    "minriff runs epsilon-prediction SD v1.x")
    if unet.get("addition_embed_type") or unet.get("class_embed_type"):
        raise UnsupportedModelError(f"{where}: UNet with added/class embeddings (SDXL style); unsupported")
    if unet.get("in_channels") in (5, 8, 9):
        raise UnsupportedModelError(f"{where}: UNet in_channels={unet.get('in_channels')} (9 = inpainting, "
                                    "8 = InstructPix2Pix, 5 = depth-to-image); unsupported")
    if unet.get("cross_attention_dim") in (1024, 2048) or unet.get("use_linear_projection") is True:
        raise UnsupportedModelError(f"{where}: cross_attention_dim {unet.get('cross_attention_dim')} "
                                    "/ linear projections (SD 2.x style); unsupported")


def check_fits(ck: Checkpoint, config: ModelConfig, where) -> None:
    """Every tensor must have a place in the minriff model built from the configs (all problems at
    once, with the same report as loading: `nn.fit_report`)."""
    models = build_models(config)
    problems = [f"{comp}: {report}" for comp, model in models.items()
                if (report := nn.fit_report(model.parameter_shapes(), ck.tensors[comp]))]
    if problems:
        raise WeightsError(f"{where}: weights do not fit the configured models: " + "; ".join(problems))


def preset_or_folder_configs(config) -> tuple[dict, dict | None, Path | None]:
    """configs from a preset name ('sd15', 'tiny') or a diffusers folder (plus its scheduler config)."""
    if config is None or config in PRESETS:
        mc = PRESETS[config or "sd15"]
        return ({"text_encoder": mc.text_encoder.to_dict(), "unet": mc.unet.to_dict(), "vae": mc.vae.to_dict()},
                None, None)
    root = Path(config)
    if not root.is_dir():
        raise WeightsError(f"--config {config}: neither a preset ({', '.join(PRESETS)}) nor a diffusers folder")
    configs = {c: _read_json(root / c / "config.json", f"{c} config") for c in COMPONENTS}
    sched = root / "scheduler" / "scheduler_config.json"
    return configs, (_read_json(sched, "scheduler config") if sched.exists() else None), root


def read_source(src, tokenizer=None, config=None, ema: bool = False, inert_globals: bool = False) -> Checkpoint:
    src = Path(src)
    if not src.exists():
        raise WeightsError(f"{src}: no such file or folder")
    if src.is_dir():
        if config is not None:
            raise WeightsError("--config applies to single-file checkpoints; a diffusers folder brings its own")
        ck = read_diffusers(src)
    else:
        configs, sched, root = preset_or_folder_configs(config)
        check_configs(configs, sched or SD15_SCHEDULER, root or src)  # the key mapping reads them
        ck = read_ldm(src, configs, ema=ema, inert_globals=inert_globals)
        if sched is not None:
            ck.scheduler_config = sched
        if tokenizer is None and root is not None and (root / "tokenizer").is_dir():
            tokenizer = root
        if tokenizer is None:
            ck.notes.append("no tokenizer given (--tokenizer DIR): the file can be loaded, but generating from a "
                            "prompt needs a tokenizer; reconvert with --tokenizer to include one")
    if tokenizer is not None:
        ck.vocab, ck.merges = read_tokenizer(tokenizer)
    config = check_configs(ck.configs, ck.scheduler_config, src)
    check_fits(ck, config, src)
    if ck.vocab is not None:
        check_vocab(ck.vocab, config.text_encoder.vocab_size, src)
    return ck


def write_converted(out, ck: Checkpoint, dtype: str = "fp16", quiet: bool = True) -> int:
    tensors = {comp: {k: (ref.shape, ref.read, ref.release) for k, ref in ck.tensors[comp].items()}
               for comp in COMPONENTS}
    return write_weights(out, tensors, ck.configs, ck.vocab, ck.merges, ck.scheduler_config, ck.source, dtype,
                         quiet=quiet)


def convert(src, out, dtype: str = "fp16", tokenizer=None, config=None, ema: bool = False, log=None,
            inert_globals: bool = False, quiet: bool = True) -> Checkpoint:
    """Read `src`, check it (configs, shapes, tokenizer) and write minriff's file `out`; `quiet=False`
    shows a progress bar over the tensors."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    atomic.check_target(out)  # a bad output (a device, a folder) is refused before reading the source
    ck = read_source(src, tokenizer=tokenizer, config=config, ema=ema, inert_globals=inert_globals)
    n = write_converted(out, ck, dtype, quiet=quiet)
    for note in ck.notes:
        log(f"note: {note}")
    log(f"wrote {n} tensors ({dtype}) to {out}")
    return ck
