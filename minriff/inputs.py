"""Checks on what users pass in (API arguments, CLI flags, server JSON): one set of functions, so
every entry point refuses the same things with the same InputError message.

Image geometry: height is the number of mel bins (512); width follows the duration at 10 ms per
pixel, rounded *up* to a multiple of 64 px (`image_width`): 5 s -> 512 px, which converts to
(512 - 1) * 10 ms = 5.11 s of audio. 64 px = 8 latent columns is what the Stable Diffusion v1 UNet
needs (three 2x downsamplings of the latent). Durations are capped at MAX_SECONDS (see there).
"""
from __future__ import annotations

import math
import os

import numpy as np

from minriff import schedulers
from minriff.errors import InputError

HEIGHT = 512
MS_PER_PIXEL = 10
WIDTH_MULTIPLE = 64
# Self-attention at the finest latent level costs width^2: a 30 s clip (3008 px, 24,064 latent
# positions) already spends ~35x the attention work of a 5 s clip per step (minutes per step on a
# laptop CPU at full size), and the model was trained on 512-px images. Longer music: `interpolate`
# or several clips.
MAX_SECONDS = 30.0


def image_width(duration_s: float) -> int:
    """Spectrogram width in pixels for a clip of `duration_s` seconds (see the module docstring)."""
    check_duration(duration_s)
    px = duration_s * 1000.0 / MS_PER_PIXEL
    return max(1, math.ceil(px / WIDTH_MULTIPLE - 1e-9)) * WIDTH_MULTIPLE


def check_duration(duration_s) -> None:
    if not isinstance(duration_s, (int, float)) or not math.isfinite(duration_s) or duration_s <= 0:
        raise InputError(f"duration must be a positive number of seconds, got {duration_s!r}")
    if duration_s > MAX_SECONDS:
        raise InputError(
            f"duration {duration_s} s is above the limit of {MAX_SECONDS:g} s per clip (UNet attention "
            f"cost grows with width squared); use `minriff interpolate` to chain clips")


def check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")
    return int(steps)


def check_guidance(guidance) -> float:
    if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or guidance < 0:
        raise InputError(f"guidance must be a number >= 0, got {guidance!r}")
    return float(guidance)


def check_scheduler(scheduler):
    """A scheduler name or object -> itself, checked: a name must be known; an object must have the
    methods of `schedulers.Scheduler` (a class of your own works)."""
    if isinstance(scheduler, str):
        if scheduler not in schedulers.NAMES:
            raise InputError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(schedulers.NAMES)} "
                             f"or pass a scheduler object")
        return scheduler
    missing = [m for m in ("set_timesteps", "scale_model_input", "step") if not callable(getattr(scheduler, m, None))]
    if missing:
        raise InputError(f"scheduler {type(scheduler).__name__} lacks {', '.join(missing)} "
                         f"(see minriff.schedulers.Scheduler)")
    return scheduler


def check_prompt(prompt, what="prompt") -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{what} is empty: describe the music, e.g. \"jazz piano solo\"")
    return prompt


def check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def check_strength(strength, what="denoising strength") -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
        raise InputError(f"{what} must be a number in (0, 1], got {strength!r}")
    return float(strength)


def check_lora_weight(weight) -> float:
    """A LoRA's weight (its scale multiplier): any finite number; negative weights invert the LoRA."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)) \
            or not math.isfinite(weight):
        raise InputError(f"LoRA weight must be a finite number, got {weight!r}")
    return float(weight)


def parse_lora_spec(spec: str) -> tuple[str, float]:
    """`FILE[:WEIGHT]` -> (file, weight). Paths may contain ':': an existing file is taken whole;
    otherwise the text after the last ':' is the weight when it reads as a number (it must then be
    finite); anything else is a path, weight 1."""
    if not isinstance(spec, str) or not spec:
        raise InputError("--lora needs FILE or FILE:WEIGHT")
    path, sep, tail = spec.rpartition(":")
    if not sep or os.path.isfile(spec) or not path:
        return spec, 1.0
    try:
        weight = float(tail)
    except ValueError:
        return spec, 1.0
    if not math.isfinite(weight):
        raise InputError(f"--lora {spec}: the weight after ':' must be a finite number, got {tail!r}")
    return path, weight


def check_callback(callback):
    if callback is not None and not callable(callback):
        raise InputError(f"callback must be a function called as callback(step_index, total_steps, timestep, "
                         f"latents), got {type(callback).__name__}")
    return callback


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
