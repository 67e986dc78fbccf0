"""The `minriff` command. Each subcommand lives in the module that owns its feature and exposes
`add_arguments(parser)` and `run(args) -> int`; modules are imported only when their command runs,
so `minriff --help` is instant. A MinriffError (or an OSError from outside minriff's own checks) is
one line on stderr and exit status 2; Ctrl-C is "interrupted" and 130. SIGXFSZ is ignored while a
command runs, so a write over `ulimit -f` fails as a clear error (minriff.atomic) instead of
killing the process."""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

from minriff.errors import MinriffError

# name -> (module, one-line help)
COMMANDS = {
    "generate": ("minriff.cli.generate:generate",
                 "text -> music: write a WAV/FLAC/MP3 (and optionally the spectrogram PNG)"),
    "interpolate": ("minriff.cli.generate:interpolate",
                    "morph from prompt A to prompt B over consecutive clips, joined seamlessly"),
    "riffuse": ("minriff.cli.generate:riffuse",
                "run one request of the original Riffusion server (flags or a JSON file)"),
    "audio2image": ("minriff.cli.audio:audio2image", "audio file -> Riffusion spectrogram PNG (with EXIF parameters)"),
    "image2audio": ("minriff.cli.audio:image2audio", "Riffusion spectrogram PNG -> audio file"),
    "convert": ("minriff.cli.weights:convert",
                "convert a diffusers folder or an LDM .ckpt/.safetensors into minriff's format"),
    "download": ("minriff.cli.weights:download",
                 "download riffusion/riffusion-model-v1 (or, with --taesd, TAESD) from the Hugging Face Hub "
                 "and convert it"),
    "info": ("minriff.cli.weights:info", "show what a converted weights file holds"),
    "init-random": ("minriff.cli.weights:init_random",
                    "write random weights with real (sd15) or tiny shapes (or TAESD's), for benchmarks and tests"),
    "serve": ("minriff.cli.serve:serve",
              "serve the original Riffusion server's API, a streaming WebSocket and a web page (needs .[server])"),
    "bench": ("minriff.bench:command", "benchmarks: ops, unet, vae, audio (ratios to same-run baselines)"),
}


def _resolve(target: str):
    mod, _, attr = target.partition(":")
    return getattr(importlib.import_module(mod), attr)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minriff",
                                     description="Riffusion text -> music on NumPy/Numba/CuPy kernels. "
                                                 "`minriff COMMAND --help` for details.")
    parser.add_argument("--version", action="version",
                        version=f"minriff {importlib.import_module('minriff').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (target, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == only:
            _resolve(target).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    xfsz = getattr(signal, "SIGXFSZ", None)
    previous = signal.signal(xfsz, signal.SIG_IGN) if xfsz and _main_thread() else None
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(xfsz, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _run(argv: list[str]) -> int:
    cmd = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=cmd if cmd in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(_resolve(COMMANDS[args.command][0]).run(args) or 0)
    except MinriffError as e:
        print(f"minriff {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the system's, outside minriff's own files (e.g. Numba's cache under `ulimit -f`)
        print(f"minriff {args.command}: error: {e}", file=sys.stderr)
        return 2


