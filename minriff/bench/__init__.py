"""`minriff bench TARGET`: benchmarks report throughput as ratios to baselines measured in the
same run (numpy sgemm peak, PyTorch on the same CPU when installed), because the machine is
shared and noisy. Each target lives in its own module: bench/ops.py, bench/unet.py, ..."""
from __future__ import annotations

import importlib

from minriff import values
from minriff.cli import int_arg
from minriff.errors import InputError

TARGETS = {
    "ops": "per-op throughput at Stable Diffusion shapes vs sgemm peak and torch",
    "unet": "one UNet step (batch 2, 64x64 latents, full-size random weights) vs torch/diffusers; "
            "--cache-branch: DeepCache's cached steps, --controlnet: a ControlNet-guided step, vs a plain step",
    "vae": "one VAE decode (64x64 latents -> 512x512 image, full-size random weights) vs torch/diffusers; "
           "--decoder taesd: TAESD's",
    "audio": "spectrogram image -> audio: inverse mel + Griffin-Lim vs librosa",
    "serve": "minriff serve, one listener: time to first audio and clips per minute per preset "
             "(quality, fast) and dpmpp2m",
    "batch": "minriff batch overheads (tiny model): jobs/s sequential vs --workers 2 vs --ray with 2 actors",
    "clip": "one 5.11 s clip, prompt to WAV, by stage (text, denoise, decode, audio), real-time factor; "
            "--preset quality|fast; vs diffusers running the same preset",
    "lora": "a rank-128 LoRA over UNet + text encoder: load+merge, set-weight, unload, memory; vs diffusers+peft",
    "seams": "how audible the joins of long pieces and remixes are (a report: flux ratios, no timing)",
}

MODULES = {"vae": "unet"}  # target -> module, where one module serves several targets


class command:  # the CLI's subcommand object
    @staticmethod
    def add_arguments(p):
        p.add_argument("target", choices=sorted(TARGETS), help="; ".join(f"{k}: {v}" for k, v in TARGETS.items()))
        p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
        p.add_argument("--backend", default="cpu", help="kernel backend to time (cpu, ref, cuda)")
        p.add_argument("--repeat", type=int_arg, default=None, help="timed repetitions, 1 to 1000 (median reported)")
        p.add_argument("--quick", action="store_true", help="smaller shapes / fewer repeats (smoke run)")
        p.add_argument("--decoder", choices=("full", "taesd"), default="full",
                       help="vae bench: the full VAE (default) or TAESD (then also the full VAE, same rounds)")
        p.add_argument("--setting", action="append", choices=("quality", "dpmpp2m", "fast"),
                       help="serve bench: only these settings (repeatable; default all)")
        p.add_argument("--profile", action="store_true",
                       help="unet/vae bench: after the timed rounds, one more call with every op timed "
                            "(table by op and shape)")
        p.add_argument("--cache-branch", type=int_arg, nargs="+", metavar="B",
                       help="unet bench: time DeepCache cached steps of these branches (e.g. 0 1 2 3) against a "
                            "full step of the same run, instead of comparing with torch")
        p.add_argument("--controlnet", nargs="?", const="random", default=None, metavar="FILE",
                       help="unet bench: time a step guided by one ControlNet (random SD 1.5 shapes, or FILE) "
                            "against a plain step of the same run, instead of comparing with torch")
        p.add_argument("--loop", action="store_true",
                       help="unet bench: a step as the quality preset's sampling loop runs it: the guided pair's "
                            "latent halves equal (the layers before the first cross-attention run once) and "
                            "the Winograd weight transforms kept from the first step (kernels.weight_cache); "
                            "diffusers gets the same inputs")
        p.add_argument("--weights", default=None, help="weights file (unet/vae/lora/clip bench: default random sd15 "
                                                       "shapes; with --decoder taesd a TAESD file)")
        p.add_argument("--rank", type=int_arg, default=None,
                       help="lora bench: LoRA rank, 1 to 1024 (default 128; 4 with --quick)")
        p.add_argument("--no-torch", action="store_true",
                       help="unet/vae bench: no diffusers baseline (saves its memory: a full-size model in a child)")
        p.add_argument("--weights-dtype", choices=("fp16", "fp32", "both"), default="fp16",
                       help="unet/vae bench: weights held in fp16 (widened where used; the default) or fp32; "
                            "both: time the two interleaved on the same (fp16-exact) values and report "
                            "fp32_s / fp16_s")
        p.add_argument("--preset", choices=("quality", "fast"), default=None,
                       help="clip bench: the preset to time (default quality; see `minriff generate --help`)")
        p.add_argument("--rounds", type=int_arg, default=None,
                       help="clip bench: timed clips on each side, 1 to 100 (default 2; median reported)")

    @staticmethod
    def run(args) -> int:
        if args.repeat is not None:
            values.integer(args.repeat, "--repeat", 1, 1000)
        if args.rank is not None:
            values.integer(args.rank, "--rank", 1, 1024)
        if args.rounds is not None:
            values.integer(args.rounds, "--rounds", 1, 100)
        given = getattr(args, "given", ())
        for flag, where in (("weights", ("unet", "vae", "lora", "clip", "seams", "serve")),
                            ("profile", ("unet", "vae")), ("rank", ("lora",)), ("cache_branch", ("unet",)),
                            ("controlnet", ("unet",)), ("preset", ("clip",)), ("rounds", ("clip",)),
                            ("loop", ("unet",))):
            if flag in given and args.target not in where:  # elsewhere it would be ignored
                name = flag.replace("_", "-")
                raise InputError(f"--{name} has no effect on `bench {args.target}` (only {', '.join(where)})")
        if "cache_branch" in given and "profile" in given:
            raise InputError("--profile has no effect with --cache-branch")
        if "loop" in given and ({"cache_branch", "controlnet"} & set(given)):
            raise InputError("--loop times a plain guided step: not with --cache-branch or --controlnet")
        if "controlnet" in given and ({"profile", "cache_branch"} & set(given)):
            raise InputError("--controlnet times its own steps: not with --profile or --cache-branch")
        mod = importlib.import_module(f"minriff.bench.{MODULES.get(args.target, args.target)}")
        return mod.run(args)
