"""TAESD (diffusers' AutoencoderTiny) on disk: its own small minriff weights file.

Why a file of its own and not a fourth component of the main file: TAESD comes from another
repository (madebyollin/taesd), serves every SD v1.x model's latent space alike (Riffusion, a random
sd15 file, a fine-tune), and is ~5 MB; adding it to a 2 GB main file would mean rewriting that file.

File: safetensors, tensors `taesd.<diffusers key>` (`taesd.decoder.layers.2.conv.0.weight`), metadata
as the main file's (`format` "minriff-1", JSON strings) with `config` = {"taesd": <AutoencoderTiny
config.json values>} and `source`. `format.file_kind` tells the two kinds apart, so a TAESD file
beside the main one in ./weights/ never shadows it.

Sources (`convert_taesd`):
- a diffusers folder (madebyollin/taesd on the Hub): config.json + diffusion_pytorch_model
  .safetensors or .bin; keys as minriff's model;
- the original release (github.com/madebyollin/taesd): `taesd_encoder.pth` + `taesd_decoder.pth`
  (or `.safetensors`, or another prefix such as `taesdxl_`), two nn.Sequential state dicts. Encoder
  keys `{i}.…` are `encoder.layers.{i}.…`; decoder keys `{i}.…` are `decoder.layers.{i-1}.…`
  (the original's index 0 is a parameter-free clamp). The config is madebyollin/taesd's with the
  channel counts read from the tensors.

Finding (`find_taesd`): $MINRIFF_TAESD (a file, or a folder: its newest TAESD file), else the
newest TAESD file beside the main weights file, else in ./weights/.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from minriff.configs import ConfigError, TAESDConfig
from minriff.errors import WeightsError
from minriff.models import nn, random_taesd
from minriff.models.taesd import AutoencoderTiny
from minriff.weights.convert import Ref, _read_json, read_component, read_tensor_file
from minriff.weights.download import download_repo
from minriff.weights.format import SingleModelFile, _newest, write_single_model
from minriff.weights.safetensors import SafetensorsFile

REPO = "madebyollin/taesd"
FILES = ("config.json", "diffusion_pytorch_model.safetensors")  # what the conversion reads
ENV = "MINRIFF_TAESD"
PREFIX = "taesd."
HOW_TO_GET = ("get TAESD with `minriff download --taesd` (madebyollin/taesd, needs internet) or "
              "`minriff convert TAESD_FOLDER -o weights/taesd.safetensors` (a diffusers folder, or the original "
              "taesd_encoder.pth + taesd_decoder.pth)")


# ----------------------------------------------------------------------------- reading sources


def _original_pair(src: Path) -> tuple[Path, Path] | None:
    """(encoder file, decoder file) of the original release: `src` is one of them or a folder holding
    exactly one `<name>_encoder.*` / `<name>_decoder.*` pair (.pth or .safetensors)."""
    if src.is_file():
        m = re.fullmatch(r"(.*)_(encoder|decoder)(\.pth|\.pt|\.safetensors)", src.name)
        if not m:
            return None
        enc, dec = (src.with_name(f"{m[1]}_{part}{m[3]}") for part in ("encoder", "decoder"))
        if not enc.is_file() or not dec.is_file():
            raise WeightsError(f"{src}: the original TAESD comes as two files; {enc.name} and {dec.name} must sit side "
                               "by side")
        return enc, dec
    pairs = []
    for enc in sorted(src.glob("*_encoder.*")):
        if enc.suffix in (".pth", ".pt", ".safetensors"):
            dec = enc.with_name(enc.name.replace("_encoder.", "_decoder."))
            if dec.is_file():
                pairs.append((enc, dec))
    if len(pairs) > 1:
        raise WeightsError(f"{src}: several TAESD encoder/decoder pairs ({', '.join(p[0].name for p in pairs)}); "
                           "give one of the files")
    return pairs[0] if pairs else None


def is_taesd_source(src) -> bool:
    """A diffusers AutoencoderTiny folder, or (a file of) the original encoder/decoder pair."""
    src = Path(src)
    if src.is_dir() and (src / "config.json").is_file():
        try:
            return json.loads((src / "config.json").read_text()).get("_class_name") == "AutoencoderTiny"
        except (OSError, ValueError, AttributeError):
            return False
    try:
        return src.exists() and _original_pair(src) is not None
    except WeightsError:
        return True  # half a pair: converting it says what is missing


def _original_config(enc: dict, dec: dict, where) -> dict:
    def shape(tensors, key, name):
        if key not in tensors:
            raise WeightsError(f"{where}: {name} has no {key} (not a TAESD {name})")
        return tensors[key].shape

    first, last = shape(enc, "0.weight", "encoder"), shape(enc, "14.weight", "encoder")
    dec_in, dec_out = shape(dec, "1.weight", "decoder"), shape(dec, "19.weight", "decoder")
    return dict(TAESDConfig(in_channels=first[1], out_channels=dec_out[0], latent_channels=last[0],
                            encoder_block_out_channels=(first[0],) * 4,
                            decoder_block_out_channels=(dec_in[0],) * 4).to_dict(), _class_name="AutoencoderTiny")


def _decoder_key(key: str, where) -> str:
    index, _, rest = key.partition(".")
    if not index.isdigit() or int(index) == 0 or not rest:
        raise WeightsError(f"{where}: unexpected decoder key {key!r} (the original decoder's layers start at 1)")
    return f"decoder.layers.{int(index) - 1}.{rest}"


def read_taesd_source(src) -> tuple[dict, dict[str, Ref], dict]:
    """(config dict, {diffusers key: Ref}, source description) of a TAESD source (module docstring)."""
    src = Path(src)
    if not src.exists():
        raise WeightsError(f"{src}: no such file or folder")
    if src.is_dir() and (src / "config.json").is_file():
        config = _read_json(src / "config.json", "TAESD config")
        if config.get("_class_name", "AutoencoderTiny") != "AutoencoderTiny":
            raise WeightsError(f"{src}: config.json describes a {config['_class_name']}, not an AutoencoderTiny")
        tensors, fname = read_component(src, ("diffusion_pytorch_model", "diffusion_pytorch_model.fp16"))
        return config, tensors, {"type": "diffusers-taesd", "path": str(src), "file": fname}
    pair = _original_pair(src)
    if pair is None:
        raise WeightsError(f"{src}: not a TAESD source (a diffusers folder with an AutoencoderTiny config.json, or "
                           "the original taesd_encoder.pth + taesd_decoder.pth)")
    enc, dec = (read_tensor_file(p) for p in pair)
    tensors = {f"encoder.layers.{k}": v for k, v in enc.items()}
    tensors.update({_decoder_key(k, pair[1]): v for k, v in dec.items()})
    config = _original_config(enc, dec, src)
    return config, tensors, {"type": "original-taesd", "encoder": str(pair[0]), "decoder": str(pair[1])}


def taesd_config(config: dict, where) -> TAESDConfig:
    try:
        return TAESDConfig.from_dict(config)
    except ConfigError as e:
        raise WeightsError(f"{where}: {e}") from None


# ----------------------------------------------------------------------------- writing, converting


def write_taesd(out, tensors: dict, config: dict, source: dict | None = None, dtype: str = "fp16") -> int:
    """Write a TAESD file. `tensors`: {diffusers key: (shape, read[, release])}; `config`: the
    AutoencoderTiny config dict (stored without diffusers' `_` bookkeeping keys)."""
    return write_single_model(out, "taesd", PREFIX, tensors, config, source, dtype)


def convert_taesd(src, out, dtype: str = "fp16", log=None) -> int:
    """A TAESD source (diffusers folder or original pair) -> minriff's TAESD file; every key and
    shape checked against the model its config builds. Returns the number of tensors written."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    config, tensors, source = read_taesd_source(src)
    cfg = taesd_config(config, src)
    report = nn.fit_report(AutoencoderTiny(cfg).parameter_shapes(), tensors)
    if report:
        raise WeightsError(f"{src}: weights do not fit the TAESD its config describes: {report}")
    n = write_taesd(out, {k: (r.shape, r.read, r.release) for k, r in tensors.items()}, config, source, dtype)
    log(f"wrote {n} TAESD tensors ({dtype}) to {out}")
    return n


def write_random_taesd(out, config: str = "taesd", dtype: str = "fp16", seed: int = 0) -> int:
    """Random TAESD weights (`models.random_taesd`; config "taesd": madebyollin/taesd's shapes, or
    "tiny"), for benchmarks and tests: it decodes any latents, to noise."""
    model = random_taesd(config, seed=seed)
    tensors = {k: (p.shape, lambda p=p: p) for k, p in model.named_parameters()}
    source = {"type": "random", "config": config, "seed": seed, "note": "random TAESD weights; for tests only"}
    return write_taesd(out, tensors, model.config.to_dict(), source, dtype)


# ----------------------------------------------------------------------------- loading, finding


class TAESDFile(SingleModelFile):
    prefix = PREFIX

    def __init__(self, path):
        self.path = Path(path)
        self.tensors = SafetensorsFile(path)
        config, self.source = self._read_header("taesd", "TAESD", HOW_TO_GET)
        self.config = taesd_config(config, self.path)

    def load(self, dtype=np.float32) -> AutoencoderTiny:
        cast = {}
        for key in self.tensor_names():
            a = self.tensors[PREFIX + key]
            cast[key] = a.astype(dtype) if a.dtype != dtype else a
        return nn.load(AutoencoderTiny(self.config), cast, what="TAESD", dtype=dtype)


def load_taesd(path, dtype=np.float32) -> AutoencoderTiny:
    return TAESDFile(path).load(dtype)


def find_taesd(beside=None) -> Path | None:
    """The TAESD file to use (module docstring), or None. `beside`: the main weights file's path."""
    env = os.environ.get(ENV)
    if env:
        p = Path(env)
        if p.is_file():
            return p
        found = _newest(p, kind="taesd") if p.is_dir() else None
        if found is None:
            raise WeightsError(f"${ENV} is set to {env}, which is neither a file nor a folder holding a TAESD file")
        return found
    folders = ([Path(beside).parent] if beside and Path(beside).is_file() else []) + [Path("weights")]
    for folder in folders:
        found = _newest(folder, kind="taesd")
        if found is not None:
            return found
    return None


# ----------------------------------------------------------------------------- downloading


def download_taesd(to="weights", endpoint: str = "https://huggingface.co", repo: str = REPO, dtype: str = "fp16",
                   keep: bool = False, retries: int = 3, timeout: float = 60.0, stream=sys.stderr) -> Path:
    """Fetch madebyollin/taesd's diffusers files (config.json + the safetensors weights, 4.9 MB) with
    weights/download.py and convert them to `<to>/taesd.safetensors`."""
    to = Path(to)
    folder = to / ".download" / repo.replace("/", "--")
    stream.write(f"downloading {repo} from {endpoint} to {folder}\n")
    download_repo(folder, endpoint, repo, files=FILES, retries=retries, timeout=timeout, stream=stream)
    out = to / ("taesd.safetensors" if repo == REPO else f"{repo.split('/')[-1]}.safetensors")
    convert_taesd(folder, out, dtype=dtype, log=lambda m: stream.write(m + "\n"))
    if not keep:
        shutil.rmtree(folder)
        if not any(folder.parent.iterdir()):
            folder.parent.rmdir()
    return out
