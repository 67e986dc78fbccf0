"""CLI commands for weights: convert, download, info, init-random. Weights files are written
atomically (minriff.atomic); -o is checked before any work."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from minriff import weights
from minriff.atomic import check_target
from minriff.configs import PRESETS


def _run_convert(args) -> int:
    from minriff.weights.convert import convert as do_convert

    check_target(args.output)  # before reading the source
    do_convert(args.src, args.output, dtype=args.dtype, tokenizer=args.tokenizer, config=args.config, ema=args.ema,
               inert_globals=args.inert_globals, quiet=args.quiet)
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")


convert = SimpleNamespace(add_arguments=_args_convert, run=_run_convert)


def _run_download(args) -> int:
    from minriff.weights.download import download_and_convert

    download_and_convert(args.to, endpoint=args.endpoint, repo=args.repo, dtype=args.dtype, keep=args.keep,
                         quiet=args.quiet)
    return 0


def _args_download(p) -> None:
    p.add_argument("--to", default="weights", help="directory for the converted file (default weights/)")
    p.add_argument("--endpoint", help="Hub address (default $HF_ENDPOINT, else https://huggingface.co); "
                                      "$HF_TOKEN (or the token `hf auth login` saved) is sent to it")
    p.add_argument("--repo", default="riffusion/riffusion-model-v1",
                   help="repository OWNER/NAME (default riffusion/riffusion-model-v1)")
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--keep", action="store_true",
                   help="keep the downloaded diffusers files (in TO/.download/OWNER--NAME/) after converting")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


download = SimpleNamespace(add_arguments=_args_download, run=_run_download)


def _run_info(args) -> int:
    wf = weights.WeightsFile(args.file)
    summary = wf.summary()
    if args.json:
        print(json.dumps({"format": wf.format, "source": wf.source, "components": summary,
                          "tokenizer": len(wf._vocab) if wf.has_tokenizer else None,
                          "scheduler": wf.scheduler_config.get("_class_name")}, indent=2))
        return 0
    size = Path(args.file).stat().st_size
    print(f"{args.file}: {wf.format}, {size / 2**20:.1f} MiB")
    print(f"  source: {json.dumps(wf.source)}")
    for name, s in summary.items():
        print(f"  {name:13s} {s['parameters']:>13,d} parameters in {s['tensors']:4d} tensors  "
              f"({', '.join(s['dtypes'])})")
    total = sum(s["parameters"] for s in summary.values())
    print(f"  {'total':13s} {total:>13,d} parameters")
    print("  tokenizer: " + (f"{len(wf._vocab)} tokens" if wf.has_tokenizer
                             else "none (generation needs one: reconvert with --tokenizer)"))
    print(f"  scheduler: {wf.scheduler_config.get('_class_name', '?')}")
    return 0


def _args_info(p) -> None:
    p.add_argument("file", help="a converted minriff weights file")
    p.add_argument("--json", action="store_true", help="print JSON")


info = SimpleNamespace(add_arguments=_args_info, run=_run_info)


# ----------------------------------------------------------------------------- init-random


def _run_init_random(args) -> int:
    t0 = time.perf_counter()
    check_target(args.output)
    n = weights.write_random(args.output, args.config, args.dtype, args.seed)
    print(f"wrote {n} random tensors ({args.config}, {args.dtype}) to {args.output} "
          f"in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    return 0


def _args_init_random(p) -> None:
    p.add_argument("--config", choices=sorted(PRESETS), default="tiny")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--seed", type=int, default=0)


init_random = SimpleNamespace(add_arguments=_args_init_random, run=_run_init_random)
