"""CLI commands for weights: convert, download, info, init-random."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .configs import PRESETS, ModelConfig
from .errors import InputError
from .weights import COMPONENTS, FORMAT, write_safetensors


def _run_convert(args) -> int:
    from .convert import convert as do_convert
    do_convert(args.src, args.output, dtype=args.dtype, tokenizer=args.tokenizer, config=args.config, ema=args.ema,
               inert_globals=args.inert_globals)
    return 0


def _args_convert(p) -> None:
    p.add_argument("src", help="a diffusers folder, or an original single-file checkpoint (.ckpt / .safetensors)")
    p.add_argument("-o", "--output", required=True, help="output file, e.g. weights/NAME.safetensors")
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16", help="storage dtype (default fp16)")
    p.add_argument("--tokenizer", help="CLIP tokenizer folder (vocab.json + merges.txt, or tokenizer.json) or a "
                                       "diffusers folder; single-file checkpoints carry none")
    p.add_argument("--config", help="single files: model configs from a preset (sd15, tiny) or a diffusers folder "
                                    "(default sd15)")
    p.add_argument("--ema", action="store_true", help="single files with EMA copies: use the EMA UNet weights "
                                                      "(default: non-EMA, as diffusers' converter)")
    p.add_argument("--inert-globals", action="store_true",
                   help="torch single files: replace globals outside the tensor-rebuild allow-list by inert "
                        "stand-ins instead of refusing (for training checkpoints with extra metadata; nothing "
                        "from the file is ever called either way)")


convert = SimpleNamespace(add_arguments=_args_convert, run=_run_convert)


def _run_download(args) -> int:
    from .download import download_and_convert
    download_and_convert(args.to, endpoint=args.endpoint, repo=args.repo, dtype=args.dtype, keep=args.keep)
    return 0


def _args_download(p) -> None:
    p.add_argument("--to", default="weights", help="directory for the converted file (default weights/)")
    p.add_argument("--endpoint", default="https://huggingface.co", help="Hub address (default https://huggingface.co)")
    p.add_argument("--repo", default="riffusion/riffusion-model-v1", help="repository (default riffusion/riffusion-model-v1)")
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--keep", action="store_true", help="keep the downloaded diffusers files after converting")


download = SimpleNamespace(add_arguments=_args_download, run=_run_download)


def _run_info(args) -> int:
    from . import weights
    wf = weights.open(args.file)
    summary = wf.summary()
    if args.json:
        print(json.dumps({"format": wf.format, "source": wf.source, "components": summary,
                          "tokenizer": len(wf._vocab) if wf.has_tokenizer else None,
                          "scheduler": wf.scheduler_config.get("_class_name")}, indent=2))
        return 0
    size = Path(args.file).stat().st_size
    print(f"{args.file}: {FORMAT if wf.format == FORMAT else wf.format}, {size / 2**20:.1f} MiB")
    print(f"  source: {json.dumps(wf.source)}")
    for name, s in summary.items():
        print(f"  {name:13s} {s['parameters']:>13,d} parameters in {s['tensors']:4d} tensors  ({', '.join(s['dtypes'])})")
    total = sum(s["parameters"] for s in summary.values())
    print(f"  {'total':13s} {total:>13,d} parameters")
    print(f"  tokenizer: {f'{len(wf._vocab)} tokens' if wf.has_tokenizer else 'none (generation needs one: reconvert with --tokenizer)'}")
    print(f"  scheduler: {wf.scheduler_config.get('_class_name', '?')}")
    return 0


def _args_info(p) -> None:
    p.add_argument("file", help="a converted minriff weights file")
    p.add_argument("--json", action="store_true", help="print JSON")


info = SimpleNamespace(add_arguments=_args_info, run=_run_info)


# ----------------------------------------------------------------------------- init-random


def random_config(name: str) -> tuple[ModelConfig, dict, list]:
    """The preset's configs plus the tiny tokenizer vocabulary (no real CLIP vocabulary is available
    offline; the sd15 random file is for speed/memory benchmarks, where the tokens do not matter)."""
    if name not in PRESETS:
        raise InputError(f"--config {name!r}: choose one of {', '.join(PRESETS)}")
    from .tokenizer import tiny_vocab
    vocab, merges = tiny_vocab()
    cfg = PRESETS[name]
    if name == "tiny":
        cfg = dataclasses.replace(cfg, text_encoder=dataclasses.replace(cfg.text_encoder, vocab_size=len(vocab)))
    return cfg, vocab, merges


def _init_value(key: str, shape: tuple, rng: np.random.Generator, std: float) -> np.ndarray:
    if key.endswith(".bias"):
        return np.zeros(shape, np.float32)
    if len(shape) == 1 and "norm" in key:
        return np.ones(shape, np.float32)
    if std == 0:  # fast path for memory benchmarks
        return np.zeros(shape, np.float32)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def write_random(out, config: str = "tiny", dtype: str = "fp16", seed: int = 0, std: float = 0.02) -> int:
    from .convert import SD15_SCHEDULER, STORE_DTYPES
    from .weights import build_models
    cfg, vocab, merges = random_config(config)
    models = build_models(cfg)
    rng = np.random.default_rng(seed)
    entries = []
    for comp in COMPONENTS:
        for key, shape in sorted(models[comp].parameter_shapes().items()):
            entries.append((f"{comp}.{key}", shape, STORE_DTYPES[dtype],
                            lambda key=key, shape=shape: _init_value(key, shape, rng, std)))
    meta = {"format": FORMAT,
            "config": {"text_encoder": cfg.text_encoder.to_dict(), "unet": cfg.unet.to_dict(), "vae": cfg.vae.to_dict()},
            "tokenizer_vocab": vocab, "tokenizer_merges": merges, "scheduler_config": SD15_SCHEDULER,
            "source": {"type": "random", "config": config, "seed": seed, "std": std,
                       "note": "random weights with the tiny tokenizer vocabulary; for tests and benchmarks only"}}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(out, entries, {k: json.dumps(v) for k, v in meta.items()})
    return len(entries)


def _run_init_random(args) -> int:
    t0 = time.perf_counter()
    n = write_random(args.output, args.config, args.dtype, args.seed)
    print(f"wrote {n} random tensors ({args.config}, {args.dtype}) to {args.output} in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    return 0


def _args_init_random(p) -> None:
    p.add_argument("--config", choices=sorted(PRESETS), default="tiny")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--seed", type=int, default=0)


init_random = SimpleNamespace(add_arguments=_args_init_random, run=_run_init_random)
