"""`--control CONTROLNET_FILE:SOURCE[:SCALE]` (repeatable), `--control-start`, `--control-end`,
`--guess-mode` for generate, interpolate and riffuse: ControlNet (minriff.controlnet).

SOURCE is a control image file, or `PREP:AUDIO` with PREP one of the music preprocessors of
`minriff.audio.controlmaps` (canny, rhythm, melody; `minriff control-image` writes the same maps)
and AUDIO an audio file or a spectrogram PNG: the control image is then made from it at the clip's
width. SCALE: the conditioning scale
(default 1). The ControlNet files and control images are read before the model weights load."""
from __future__ import annotations

import math

from minriff.audio.controlmaps import PREPROCESSORS
from minriff.errors import InputError

PREPROCESSOR_NAMES = tuple(PREPROCESSORS)
NEEDS = {"control_start": "control", "control_end": "control", "guess_mode": "control"}


def add_arguments(p) -> None:
    g = p.add_argument_group("ControlNet")
    g.add_argument("--control", action="append", metavar="CONTROLNET:SOURCE[:SCALE]",
                   help="steer the clip with a ControlNet: a converted ControlNet file (minriff convert), a "
                        "control image (PNG/JPEG, resized to the spectrogram) or PREP:AUDIO (canny, rhythm or "
                        "melody of an audio file or spectrogram PNG), and the conditioning scale (default 1), "
                        "e.g. weights/cn_canny.safetensors:canny:clip.wav:0.8; repeat for several (their "
                        "effects add up). SD 1.5 ControlNets were trained on photos: on spectrograms the result "
                        "is an experiment")
    g.add_argument("--control-start", type=float,
                   help="fraction of the denoising steps before the ControlNets start acting (default 0)")
    g.add_argument("--control-end", type=float,
                   help="fraction of the denoising steps after which they stop (default 1)")
    g.add_argument("--guess-mode", action="store_true",
                   help="ControlNet guess mode: the ControlNets see only the prompt's half of the guidance "
                        "batch, and their shallow residuals are weakened (0.1x to 1x)")


def parse_spec(spec: str) -> tuple[str, str | None, str, float]:
    """CONTROLNET:SOURCE[:SCALE] -> (controlnet file, preprocessor or None, source, scale)."""
    parts = spec.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise InputError(f"--control {spec!r}: expected CONTROLNET_FILE:SOURCE[:SCALE] (SOURCE an image, or "
                         f"{'|'.join(PREPROCESSOR_NAMES)}:AUDIO)")
    file, rest, scale = parts[0], parts[1:], 1.0
    if len(rest) > 1 and _number(rest[-1]) is not None:
        scale = _number(rest.pop())
    prep = rest[0] if len(rest) > 1 and rest[0] in PREPROCESSOR_NAMES else None
    source = ":".join(rest[1:] if prep else rest)
    if not source:
        raise InputError(f"--control {spec!r}: no control source after {prep or file!r}")
    return file, prep, source, scale


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def controls(args, width: int | None) -> dict:
    """The pipeline's ControlNet keyword arguments from the flags (files read and images made now),
    or {} without --control. `width`: the clip's spectrogram width in px, for PREP:AUDIO sources."""
    if not getattr(args, "control", None):
        return {}
    from minriff.controlnet import check_window, control_image
    from minriff.weights.controlnet import load_controlnet

    start, end = check_window(0.0 if args.control_start is None else args.control_start,
                              1.0 if args.control_end is None else args.control_end)
    if getattr(args, "cache_interval", None) is not None:
        if "cache_interval" in getattr(args, "given", set()):
            raise InputError("--control cannot be combined with DeepCache (--cache-interval): its cached steps skip "
                             "the layers a ControlNet steers")
        args.cache_interval = None  # a preset's DeepCache: off for a controlled run
        if not args.quiet:
            import sys

            print(f"minriff: --preset {args.preset} without DeepCache: --control needs every step whole",
                  file=sys.stderr)
    out = []
    for spec in args.control:
        file, prep, source, scale = parse_spec(spec)
        if prep is None:
            image = control_image(source, f"control image {source}")
        else:
            image = _preprocessed(prep, source, width)
        out.append((load_controlnet(file), image, scale))
    return dict(controls=out, control_start=start, control_end=end, guess_mode=bool(args.guess_mode))


def _preprocessed(prep: str, source: str, width: int | None):
    from minriff.audio.controlmaps import control_image

    return control_image(prep, source, width)
