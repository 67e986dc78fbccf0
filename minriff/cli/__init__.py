"""The `minriff` command. Each subcommand lives in the module that owns its feature and exposes
`add_arguments(parser)` and `run(args) -> int`; modules are imported only when their command runs,
so `minriff --help` is instant. A MinriffError (or an OSError from outside minriff's own checks) is
one line on stderr and exit status 2; Ctrl-C is "interrupted" and 130. SIGXFSZ is ignored while a
command runs, so a write over `ulimit -f` fails as a clear error (minriff.atomic) instead of
killing the process.

An option that would have no effect is an error, never ignored: a command may declare `needs`
({option: option it only works with}) and `excludes` ({option: option that overrides it}), checked
here against the options the user actually typed (`args.given`, dests; defaults do not count).
Integer options use `int_arg` (a 5,000-digit number is refused before int() sees it)."""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

from minriff.errors import InputError, MinriffError

# name -> (module, one-line help)
COMMANDS = {
    "generate": ("minriff.cli.generate:generate",
                 "text -> music: write a WAV/FLAC/MP3 (and optionally the spectrogram PNG)"),
    "interpolate": ("minriff.cli.generate:interpolate",
                    "morph from prompt A to prompt B over consecutive clips, joined seamlessly"),
    "riffuse": ("minriff.cli.generate:riffuse",
                "run one request of the original Riffusion server (flags or a JSON file)"),
    "batch": ("minriff.cli.batch:batch",
              "many clips from a JSON Lines job file: resumable, --workers N processes or --ray on a cluster"),
    "audio2image": ("minriff.cli.audio:audio2image", "audio file -> Riffusion spectrogram PNG (with EXIF parameters)"),
    "image2audio": ("minriff.cli.audio:image2audio", "Riffusion spectrogram PNG -> audio file"),
    "remix": ("minriff.cli.remix:remix",
              "audio-to-audio: riff a song (or a part of it) toward a prompt, any length, stereo kept"),
    "control-image": ("minriff.cli.control:control_image",
                      "music -> ControlNet control image: canny edges, rhythm onsets or melody line (PNG)"),
    "exif": ("minriff.cli.audio:exif", "print the spectrogram parameters stored in a PNG's EXIF (print-exif)"),
    "clips": ("minriff.cli.audio:clips", "cut N random clips of S seconds from an audio file (sample-clips)"),
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
    "lora": ("minriff.cli.lora:command", "LoRA files: `minriff lora info FILE` (format, ranks, alphas, targets)"),
    "bench": ("minriff.bench:command", "benchmarks: ops, unet, vae, audio, lora, clip (ratios to same-run baselines)"),
}


def _resolve(target: str):
    mod, _, attr = target.partition(":")
    return getattr(importlib.import_module(mod), attr)


MAX_INT_DIGITS = 40


def int_arg(text: str) -> int:
    """argparse type for integer options: digits only (optional sign), at most MAX_INT_DIGITS."""
    digits = text.strip().lstrip("+-")
    if not digits.isascii() or not digits.isdigit() or len(digits) > MAX_INT_DIGITS:
        raise argparse.ArgumentTypeError(f"not an integer of at most {MAX_INT_DIGITS} digits: {text[:40]!r}")
    return int(text)


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
            parser.command_parser = p
    return parser


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests of the options present in argv: the same parse with every default suppressed."""
    sub = getattr(parser, "command_parser", None)
    if sub is None:
        return set()
    saved = [(a, a.default) for a in sub._actions]
    try:
        for a, _ in saved:
            a.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv))) - {"command"}
    finally:
        for a, default in saved:
            a.default = default


def _flag(parser, dest: str) -> str:
    for a in getattr(parser, "command_parser", parser)._actions:
        if a.dest == dest and a.option_strings:
            return max(a.option_strings, key=len)
    return dest


def check_option_effects(parser, command, given: set[str]) -> None:
    """Refuse options that the other options make meaningless (module docstring)."""
    for opt, others in getattr(command, "needs", {}).items():  # an option, or a tuple of alternatives
        others = others if isinstance(others, tuple) else (others,)
        if opt in given and not any(o in given for o in others):
            raise InputError(f"{_flag(parser, opt)} has no effect without "
                             f"{' or '.join(_flag(parser, o) for o in others)}")
    for opt, other in getattr(command, "excludes", {}).items():
        if opt in given and other in given:
            raise InputError(f"{_flag(parser, opt)} has no effect with {_flag(parser, other)}")


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
        command = _resolve(COMMANDS[args.command][0])
        args.given = given_options(parser, argv)
        check_option_effects(parser, command, args.given)
        return int(command.run(args) or 0)
    except MinriffError as e:
        print(f"minriff {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the system's, outside minriff's own files (e.g. Numba's cache under `ulimit -f`)
        print(f"minriff {args.command}: error: {e}", file=sys.stderr)
        return 2


