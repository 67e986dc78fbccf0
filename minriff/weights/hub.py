"""The Hugging Face conventions minriff follows, read from the environment each time (so a test or
a long-lived process sees changes), with the precedence huggingface_hub uses:

    endpoint   $HF_ENDPOINT, else https://huggingface.co (a trailing '/' removed)
    token      $HF_TOKEN, else $HUGGING_FACE_HUB_TOKEN, else the file $HF_TOKEN_PATH
               (default $HF_HOME/token, what `hf auth login` writes); blank means none
    offline    $MINRIFF_OFFLINE, $HF_HUB_OFFLINE or $TRANSFORMERS_OFFLINE set to 1/ON/YES/TRUE
    HF_HOME    $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface
    hub cache  $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub

and minriff's own folder for converted weights (first-run downloads land there):

    minriff home  $MINRIFF_HOME, else $XDG_CACHE_HOME/minriff, else ~/.cache/minriff

The hub cache layout (what huggingface_hub and diffusers' `from_pretrained` leave) is
`models--<owner>--<name>/refs/main` (a commit hash), `snapshots/<commit>/<path>` (symlinks into
`blobs/`, or plain files where symlinks are off). `cached_snapshot` finds a complete diffusers
snapshot of a repo there; broken links (blobs removed) count as missing.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

REPO = "riffusion/riffusion-model-v1"
DEFAULT_ENDPOINT = "https://huggingface.co"
TRUE = {"1", "ON", "YES", "TRUE"}
OFFLINE_VARS = ("MINRIFF_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _path(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value)))


def _cache_base() -> Path:
    return _path(os.environ.get("XDG_CACHE_HOME") or "~/.cache")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> str | None:
    """The variable that turns downloads off, as `NAME=value`, or None."""
    for name in OFFLINE_VARS:
        value = os.environ.get(name)
        if value and value.strip().upper() in TRUE:
            return f"{name}={value}"
    return None


def hf_home() -> Path:
    return _path(os.environ["HF_HOME"]) if os.environ.get("HF_HOME") else _cache_base() / "huggingface"


def hf_hub_cache() -> Path:
    value = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return _path(value) if value else hf_home() / "hub"


def token() -> str | None:
    value = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if value is None:
        path = _path(os.environ["HF_TOKEN_PATH"]) if os.environ.get("HF_TOKEN_PATH") else hf_home() / "token"
        try:
            value = path.read_text(encoding="utf-8")[:4096]
        except (OSError, UnicodeDecodeError):
            return None
    value = value.strip()
    return value if value and "\n" not in value and "\r" not in value else None


def minriff_home() -> Path:
    return _path(os.environ["MINRIFF_HOME"]) if os.environ.get("MINRIFF_HOME") else _cache_base() / "minriff"


# what a diffusers snapshot must hold to convert (convert.WEIGHT_STEMS names the weights files)
COMPONENT_WEIGHTS = {"unet": ("diffusion_pytorch_model", "diffusion_pytorch_model.fp16"),
                     "vae": ("diffusion_pytorch_model", "diffusion_pytorch_model.fp16"),
                     "text_encoder": ("model", "pytorch_model", "model.fp16", "pytorch_model.fp16")}


def cached_snapshot(repo: str = REPO, cache: Path | None = None) -> tuple[Path | None, Path | None]:
    """(complete snapshot folder or None, an incomplete one seen or None) of `repo` in the hub cache:
    the commit refs/main names first, then the other snapshots, newest first."""
    root = (cache or hf_hub_cache()) / ("models--" + repo.replace("/", "--"))
    snapshots = root / "snapshots"
    if not snapshots.is_dir():
        return None, None
    order = []
    try:
        commit = (root / "refs" / "main").read_text(encoding="utf-8").strip()
        if re.fullmatch(r"[0-9a-f]{40}", commit):
            order.append(snapshots / commit)
    except (OSError, UnicodeDecodeError):
        pass
    try:
        others = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        others = []
    incomplete = None
    for snap in order + [p for p in others if p not in order]:
        if is_complete(snap):
            return snap, None
        incomplete = incomplete or (snap if snap.is_dir() else None)
    return None, incomplete


def is_complete(folder: Path) -> bool:
    """model_index.json, each component's config.json and weights, and a tokenizer."""
    def has(*names):
        return any((folder / n).is_file() for n in names)
    if not has("model_index.json"):
        return False
    for comp, stems in COMPONENT_WEIGHTS.items():
        files = [f"{comp}/{s}{ext}" for s in stems for ext in (".safetensors", ".bin")]
        if not has(f"{comp}/config.json") or not has(*files, *(f + ".index.json" for f in files)):
            return False
    return has("tokenizer/tokenizer.json") or (has("tokenizer/vocab.json") and has("tokenizer/merges.txt"))
