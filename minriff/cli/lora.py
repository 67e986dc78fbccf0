"""LoRA on the command line: the `--lora FILE[:WEIGHT]` option every generating command shares
(`add_lora_argument`, then `apply_loras` after loading the pipeline), and `minriff lora info FILE`."""
from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from minriff.errors import InputError, MinriffError
from minriff.inputs import parse_lora_spec

LORA_HELP = ("merge a LoRA file (kohya-ss or diffusers/PEFT .safetensors/.bin) at WEIGHT (default 1; -100 to 100, "
             "negative inverts it); repeat to stack several")


def _spec(text: str) -> tuple[str, float]:
    try:
        return parse_lora_spec(text)
    except MinriffError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_lora_argument(p) -> None:
    p.add_argument("--lora", action="append", default=[], type=_spec, metavar="FILE[:WEIGHT]", help=LORA_HELP)


def check_lora_files(specs) -> None:
    """Each `--lora` file exists and is a file: checked before the weights load (seconds at full size)."""
    for path, _ in specs:
        if not Path(path).exists():
            hint = (" (in FILE:WEIGHT the text after the last ':' must be a number to be read as the weight)"
                    if ":" in path else "")
            raise InputError(f"LoRA file {path} not found{hint}")
        if not Path(path).is_file():
            raise InputError(f"LoRA file {path} is not a file")


def apply_loras(riff, specs, say=lambda msg: None) -> list[str]:
    """Load each (file, weight) of `--lora` into the pipeline, in order; returns their names."""
    check_lora_files(specs)
    names = []
    for path, weight in specs:
        name = riff.load_lora(path, weight=weight)
        info = next(i for i in riff.loras if i.name == name)
        layers = ", ".join(f"{n} {comp.replace('_', ' ')}" for comp, n in sorted(info.targets.items()))
        say(f"LoRA {name} ({info.format}, rank {info.rank}) at weight {weight:g}: {layers} layers")
        names.append(name)
    return names


# ----------------------------------------------------------------------------- minriff lora info


def _targets(args):
    from minriff import weights
    from minriff.configs import PRESETS
    from minriff.weights.lora_names import Targets

    if args.weights:
        return Targets.for_config(weights.WeightsFile(args.weights).config), args.weights
    return Targets.for_config(PRESETS[args.config]), f"the {args.config} preset"


def _counts(values) -> str:
    return ", ".join(f"{v:g} ({n} layers)" for v, n in sorted(Counter(values).items()))


def _run_info(args) -> int:
    from minriff.weights.lora import read_lora

    targets, model = _targets(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lora = read_lora(args.sub_file, targets, strict=False)
    layers = sorted(lora.layers, key=lambda la: (la.target.component, la.target.module))
    dtypes = sorted({str(a.dtype) for la in layers for a in (la.down, la.up)})
    per_comp = lora.counts()
    if args.json:
        print(json.dumps({
            "file": str(lora.path), "format": lora.format, "parameters": lora.parameters, "dtypes": dtypes,
            "ranks": dict(Counter(la.rank for la in layers)), "alphas": dict(Counter(la.alpha for la in layers)),
            "targets": per_comp, "unmatched_keys": lora.skipped, "model": model,
            "layers": [{"component": la.target.component, "module": la.target.module, "rank": la.rank,
                        "alpha": la.alpha, "scale": la.scale, "shape": list(la.target.shape)} for la in layers]
            if args.verbose else None}, indent=2))
        return 0
    size = Path(args.sub_file).stat().st_size
    print(f"{args.sub_file}: {lora.format} LoRA, {lora.parameters:,d} parameters ({', '.join(dtypes)}), "
          f"{size / 2**20:.1f} MiB")
    print(f"  ranks:   {_counts(la.rank for la in layers)}")
    print(f"  alphas:  {_counts(la.alpha for la in layers)}  (scale = alpha / rank, per layer)")
    print("  targets: " + ", ".join(f"{comp.replace('_', ' ')} {n} layers" for comp, n in sorted(per_comp.items()))
          + f" (names checked against {model})")
    kinds = Counter(_kind(la.target.module) for la in layers)
    print("  kinds:   " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    if lora.skipped:
        print(f"  unmatched: {len(lora.skipped)} keys match no layer, e.g. {', '.join(lora.skipped[:5])}")
    interesting = {k: v for k, v in lora.metadata.items() if k.startswith("ss_network") or k == "ss_base_model_version"}
    for k, v in sorted(interesting.items()):
        print(f"  {k}: {v}")
    if args.verbose:
        for la in layers:
            print(f"    {la.target.label:86s} rank {la.rank:4d}  alpha {la.alpha:8g}  scale {la.scale:8.4g}  "
                  f"{'x'.join(map(str, la.target.shape))}")
    return 0


def _kind(module: str) -> str:
    """A layer's kind for the summary: attn1.to_q, attn2.to_out, ff.net.0.proj, resnets.conv1,
    downsamplers.conv, self_attn.q_proj, mlp.fc1, ..."""
    if ".ff.net." in module:
        return module[module.index("ff.net."):]
    return ".".join(re.sub(r"\.\d+", "", module).split(".")[-2:])


def _args(p) -> None:
    sub = p.add_subparsers(dest="lora_command", metavar="SUBCOMMAND", required=True)
    info = sub.add_parser("info", help="what a LoRA file holds: format, ranks, alphas, targets, parameters",
                          description="what a LoRA file holds: format, ranks, alphas, the layers it changes per "
                                      "component, parameter count")
    info.add_argument("sub_file", metavar="FILE", help="a LoRA .safetensors / .bin / .pt")
    info.add_argument("--verbose", "-v", action="store_true", help="also list every layer (rank, alpha, scale, shape)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--config", default="sd15", choices=("sd15", "tiny"),
                      help="model whose layer names the file is checked against (default sd15)")
    info.add_argument("--weights", help="or a converted weights file: check against its models' configs")


def _run(args) -> int:
    if args.lora_command == "info":
        return _run_info(args)
    print(f"unknown lora subcommand {args.lora_command}", file=sys.stderr)
    return 2


command = SimpleNamespace(add_arguments=_args, run=_run)
