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
from minriff.errors import WeightsError
from minriff.weights import controlnet, taesd
from minriff.weights.format import file_kind
from minriff.weights.safetensors import SafetensorsFile


def _run_convert(args) -> int:
    from minriff.weights.convert import convert as do_convert

    check_target(args.output, make_parents=True)  # before reading the source (the writer makes folders)
    if taesd.is_taesd_source(args.src):
        if args.tokenizer or args.config or args.ema or args.inert_globals:
            raise WeightsError(f"{args.src} is TAESD (the tiny autoencoder): only -o and --dtype apply")
        taesd.convert_taesd(args.src, args.output, dtype=args.dtype)
        return 0
    if controlnet.is_controlnet_source(args.src):
        if args.tokenizer or args.ema or args.inert_globals:
            raise WeightsError(f"{args.src} is a ControlNet: only -o, --dtype and (single files) --config apply")
        controlnet.convert_controlnet(args.src, args.output, dtype=args.dtype, config=args.config)
        return 0
    do_convert(args.src, args.output, dtype=args.dtype, tokenizer=args.tokenizer, config=args.config, ema=args.ema,
               inert_globals=args.inert_globals, quiet=args.quiet)
    return 0


def _args_convert(p) -> None:
    p.add_argument("src", help="a diffusers folder, or an original single-file checkpoint (.ckpt / .safetensors); "
                               "or TAESD: its diffusers folder (madebyollin/taesd) or the original "
                               "taesd_encoder.pth + taesd_decoder.pth (a folder or one of the two); or a ControlNet: "
                               "its diffusers folder, or an original control_sd15_*.pth / control_v11*_sd15_* file")
    p.add_argument("-o", "--output", required=True, help="output file, e.g. weights/NAME.safetensors")
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16", help="storage dtype (default fp16)")
    p.add_argument("--tokenizer", help="CLIP tokenizer folder (vocab.json + merges.txt, or tokenizer.json) or a "
                                       "diffusers folder; single-file checkpoints carry none")
    p.add_argument("--config", help="single files: model configs from a preset (sd15, tiny) or a diffusers folder "
                                    "(default sd15); for a ControlNet single file a preset or a diffusers "
                                    "ControlNet folder / config.json")
    p.add_argument("--ema", action="store_true", help="single files with EMA copies: use the EMA UNet weights "
                                                      "(default: non-EMA, as diffusers' converter)")
    p.add_argument("--inert-globals", action="store_true",
                   help="torch single files: replace globals outside the tensor-rebuild allow-list by inert "
                        "stand-ins instead of refusing (for training checkpoints with extra metadata; nothing "
                        "from the file is ever called either way)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


convert = SimpleNamespace(add_arguments=_args_convert, run=_run_convert)


def _run_download(args) -> int:
    if args.taesd:
        taesd.download_taesd(args.to, endpoint=args.endpoint, repo=taesd.REPO if args.repo is None else args.repo,
                             dtype=args.dtype, keep=args.keep)
        return 0
    from minriff.weights.download import REPO, download_and_convert

    download_and_convert(args.to, endpoint=args.endpoint, repo=REPO if args.repo is None else args.repo,
                         dtype=args.dtype, keep=args.keep, quiet=args.quiet)
    return 0


def _args_download(p) -> None:
    p.add_argument("--to", default="weights", help="directory for the converted file (default weights/)")
    p.add_argument("--endpoint", help="Hub address (default $HF_ENDPOINT, else https://huggingface.co); "
                                      "$HF_TOKEN (or the token `hf auth login` saved) is sent to it")
    p.add_argument("--repo", help="repository OWNER/NAME (default riffusion/riffusion-model-v1; with --taesd "
                                  "madebyollin/taesd)")
    p.add_argument("--taesd", action="store_true",
                   help="download TAESD, the tiny autoencoder (madebyollin/taesd, 5 MB), to <to>/taesd.safetensors: "
                        "for --decoder taesd")
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--keep", action="store_true",
                   help="keep the downloaded diffusers files (in TO/.download/OWNER--NAME/) after converting")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


download = SimpleNamespace(add_arguments=_args_download, run=_run_download)


def _run_info(args) -> int:
    kind = file_kind(SafetensorsFile(args.file).metadata)
    if kind == "taesd":
        return _info_taesd(args, taesd.TAESDFile(args.file))
    if kind == "controlnet":
        return _info_controlnet(args, controlnet.ControlNetFile(args.file))
    wf = weights.WeightsFile(args.file)
    summary = wf.summary()
    if args.json:
        print(json.dumps({"format": wf.format, "source": wf.source, "components": summary,
                          "tokenizer": len(wf._vocab) if wf.has_tokenizer else None,
                          "scheduler": wf.scheduler_config.get("_class_name"),
                          "taesd": _found_taesd(args.file)}, indent=2))
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
    found = _found_taesd(args.file)
    print(f"  taesd: {found} (used by --decoder taesd)" if found else
          "  taesd: none found (for --decoder taesd: minriff download --taesd)")
    return 0


def _found_taesd(main_file) -> str | None:
    try:
        found = taesd.find_taesd(beside=main_file)
    except WeightsError as e:
        return f"error: {e}"
    return None if found is None else str(found)


def _info_taesd(args, tf) -> int:
    summary = tf.summary()
    if args.json:
        print(json.dumps({"format": "minriff-1", "kind": "taesd", "source": tf.source, "taesd": summary,
                          "config": tf.config.to_dict()}, indent=2))
        return 0
    cfg = tf.config
    print(f"{args.file}: TAESD (tiny autoencoder), {Path(args.file).stat().st_size / 2**20:.1f} MiB")
    print(f"  source: {json.dumps(tf.source)}")
    print(f"  taesd {summary['parameters']:>13,d} parameters in {summary['tensors']:4d} tensors  "
          f"({', '.join(summary['dtypes'])})")
    print(f"  {cfg.latent_channels} latent channels, 1/{cfg.downscale} size, "
          f"{cfg.encoder_block_out_channels[0]}/{cfg.decoder_block_out_channels[0]} channels (encoder/decoder)")
    return 0


def _info_controlnet(args, cf) -> int:
    summary = cf.summary()
    cfg = cf.config
    if args.json:
        print(json.dumps({"format": "minriff-1", "kind": "controlnet", "source": cf.source, "controlnet": summary,
                          "config": cfg.to_dict()}, indent=2))
        return 0
    print(f"{args.file}: ControlNet, {Path(args.file).stat().st_size / 2**20:.1f} MiB")
    print(f"  source: {json.dumps(cf.source)}")
    print(f"  controlnet {summary['parameters']:>13,d} parameters in {summary['tensors']:4d} tensors  "
          f"({', '.join(summary['dtypes'])})")
    print(f"  for a UNet of {'/'.join(map(str, cfg.block_out_channels))} channels, cross-attention "
          f"{cfg.cross_attention_dim}; control image: {cfg.conditioning_channels} channels "
          f"({cfg.controlnet_conditioning_channel_order}) at {cfg.hint_downscale}x the latent size"
          + ("; global pooling (always guess mode)" if cfg.global_pool_conditions else ""))
    return 0


def _args_info(p) -> None:
    p.add_argument("file", help="a converted minriff weights file (or a TAESD or ControlNet file)")
    p.add_argument("--json", action="store_true", help="print JSON")


info = SimpleNamespace(add_arguments=_args_info, run=_run_info)


# ----------------------------------------------------------------------------- init-random


def _run_init_random(args) -> int:
    t0 = time.perf_counter()
    check_target(args.output, make_parents=True)
    if args.taesd:
        n = taesd.write_random_taesd(args.output, "taesd" if args.config == "sd15" else args.config, args.dtype,
                                     args.seed)
        print(f"wrote {n} random TAESD tensors ({args.config}, {args.dtype}) to {args.output}", file=sys.stderr)
        return 0
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
    p.add_argument("--taesd", action="store_true",
                   help="write a random TAESD file instead (madebyollin/taesd's shapes with --config sd15, 8 channels "
                        "with tiny)")


init_random = SimpleNamespace(add_arguments=_args_init_random, run=_run_init_random)
