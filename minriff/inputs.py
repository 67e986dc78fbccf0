"""Checks on what users pass in (API arguments, CLI flags, server JSON): one set of functions, so
every entry point refuses the same things with the same InputError message.

Image geometry: height is the number of mel bins (512); width follows the duration at 10 ms per
pixel, rounded *up* to a multiple of 64 px (`image_width`): 5 s -> 512 px, which converts to
(512 - 1) * 10 ms = 5.11 s of audio. 64 px = 8 latent columns is what the Stable Diffusion v1 UNet
needs (three 2x downsamplings of the latent). Durations are capped at MAX_SECONDS (see there).

Every limit is a constant here (README "Limits" lists them with the memory each needs): clip
length, steps, guidance, prompt length, interpolation frames, seed/init image size. The primitive
checks (numbers of any Python/NumPy type, text, JSON) are `minriff.values`; images are opened by
`minriff.images`. The server's request is parsed by `minriff.riffuse.InferenceInput` with these.
"""
from __future__ import annotations

import math
import os

import numpy as np

from minriff import images, schedulers, values
from minriff.errors import InputError

HEIGHT = 512
MS_PER_PIXEL = 10
WIDTH_MULTIPLE = 64
# Self-attention at the finest latent level costs width^2: a 30 s clip (3008 px, 24,064 latent
# positions) already spends ~35x the attention work of a 5 s clip per step (minutes per step on a
# laptop CPU at full size), and the model was trained on 512-px images. Longer music: `interpolate`
# or several clips.
MAX_SECONDS = 30.0
MAX_STEPS = 1000  # the schedulers' 1000 training timesteps: more steps would repeat timesteps
MAX_GUIDANCE = 100.0  # Riffusion uses 7; far above ~30 the noise prediction is extrapolated into noise
MAX_PROMPT_CHARS = 1000  # CLIP reads 75 tokens (~300 characters); BPE cost grows with word length squared
MAX_FRAMES = 100  # `interpolate` clips: 100 x 5 s = 8.5 minutes of music, ~11 h of CPU at full size


def image_width(duration_s: float) -> int:
    """Spectrogram width in pixels for a clip of `duration_s` seconds (see the module docstring)."""
    duration_s = check_duration(duration_s)
    px = duration_s * 1000.0 / MS_PER_PIXEL
    return max(1, math.ceil(px / WIDTH_MULTIPLE - 1e-9)) * WIDTH_MULTIPLE


def check_duration(duration_s) -> float:
    try:
        duration_s = values.number(duration_s, "duration", 0.0, lo_open=True)
    except InputError:
        raise InputError(f"duration must be a positive number of seconds, got {values.show(duration_s)}") from None
    if duration_s > MAX_SECONDS:
        raise InputError(
            f"duration {duration_s:g} s is above the limit of {MAX_SECONDS:g} s per clip (UNet attention "
            f"cost grows with width squared); use `minriff interpolate` to chain clips")
    return duration_s


# seed, init and mask images: 512 px high, at most as wide as the longest clip (3008 px)
MAX_IMAGE_WIDTH = image_width(MAX_SECONDS)


def check_image_size(width: int, height: int, what: str = "seed image") -> None:
    """A seed/init/mask image must be a 512-px-high spectrogram no wider than MAX_IMAGE_WIDTH (its
    width sets the clip length, and the UNet's cost grows with its square)."""
    if height != HEIGHT or not 2 <= width <= MAX_IMAGE_WIDTH:
        raise InputError(
            f"{what} is {width:,}x{height:,} px; it must be {HEIGHT} px high (a Riffusion spectrogram, e.g. from "
            f"`minriff audio2image`) and 2 to {MAX_IMAGE_WIDTH} px wide ({MAX_SECONDS:g} s)")


def open_model_image(path, what: str = "seed image"):
    """A seed/init/mask image file -> (512, W, 3) uint8, its size checked from the header before decoding."""
    image = images.open_image(path, what, max_width=MAX_IMAGE_WIDTH, max_height=HEIGHT)
    check_image_size(*image.size, what)
    return images.rgb8(image, what)


def model_image(image, what: str = "seed image"):
    """A seed/init/mask image given as a PIL image or an array -> (512, W, 3) uint8, its size
    checked before any conversion (a lazily opened PIL image is not decoded when refused)."""
    shape = (image.size[1], image.size[0]) if isinstance(image, images.Image.Image) else np.shape(image)
    if len(shape) >= 2:
        check_image_size(shape[1], shape[0], what)
    return images.rgb8(image, what)


def check_steps(steps, what="steps") -> int:
    return values.integer(steps, what, 1, MAX_STEPS)


def check_guidance(guidance, what="guidance") -> float:
    return values.number(guidance, what, 0.0, MAX_GUIDANCE)


def check_frames(frames, what="frames") -> int:
    return values.integer(frames, what, 2, MAX_FRAMES)


def check_scheduler(scheduler):
    """A scheduler name or object -> itself, checked: a name must be known; an object must have the
    methods of `schedulers.Scheduler` (a class of your own works)."""
    if isinstance(scheduler, str):
        if scheduler not in schedulers.NAMES:
            raise InputError(f"unknown scheduler {scheduler[:40]!r}; choose one of {', '.join(schedulers.NAMES)} "
                             f"or pass a scheduler object")
        return scheduler
    missing = [m for m in ("set_timesteps", "scale_model_input", "step") if not callable(getattr(scheduler, m, None))]
    if missing:
        raise InputError(f"scheduler {type(scheduler).__name__} lacks {', '.join(missing)} "
                         f"(see minriff.schedulers.Scheduler)")
    return scheduler


AUTOENCODERS = ("full", "taesd")


def check_autoencoder(name, what="decoder") -> str:
    """"full" (the Stable Diffusion VAE) or "taesd" (the tiny autoencoder), for decoding or encoding."""
    if name not in AUTOENCODERS:
        raise InputError(f"{what} must be one of {', '.join(AUTOENCODERS)}, got {name!r}")
    return name


def check_prompt(prompt, what="prompt") -> str:
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise InputError(f"{what} is empty: describe the music, e.g. \"jazz piano solo\"")
    return values.text(prompt, what, MAX_PROMPT_CHARS)


def check_negative_prompt(prompt, what="negative prompt") -> str | None:
    """None or text (empty allowed: no negative prompt)."""
    return None if prompt is None else values.text(prompt, what, MAX_PROMPT_CHARS, allow_empty=True)


def check_alpha(alpha, what="alpha") -> float:
    return values.number(alpha, what, 0.0, 1.0)


def check_strength(strength, what="denoising strength") -> float:
    return values.number(strength, what, 0.0, 1.0, lo_open=True)


def check_seed(seed, what="seed") -> int:
    """Seeds as torch.Generator.manual_seed takes them: integers from -2^63 to 2^64 - 1."""
    return values.integer(seed, what, -(2**63), 2**64 - 1)


MAX_LORA_WEIGHT = 100.0  # usual weights are -2..2; beyond 100 a LoRA swamps any model's weights


def check_lora_weight(weight, what="LoRA weight") -> float:
    """A LoRA's weight (its scale multiplier): a number in [-100, 100]; negative weights invert the LoRA."""
    return values.number(weight, what, -MAX_LORA_WEIGHT, MAX_LORA_WEIGHT)


def parse_lora_spec(spec: str) -> tuple[str, float]:
    """`FILE[:WEIGHT]` -> (file, weight). Paths may contain ':': an existing file is taken whole;
    otherwise the text after the last ':' is the weight when it reads as a number (it must then be
    within the LoRA weight's limits); anything else is a path, weight 1."""
    if not isinstance(spec, str) or not spec:
        raise InputError("--lora needs FILE or FILE:WEIGHT")
    path, sep, tail = spec.rpartition(":")
    if not sep or os.path.isfile(spec) or not path:
        return spec, 1.0
    try:
        weight = float(tail)
    except ValueError:
        return spec, 1.0
    return path, check_lora_weight(weight, f"--lora {values.show(spec)}: the weight after ':'")


def check_callback(callback):
    if callback is not None and not callable(callback):
        raise InputError(f"callback must be a function called as callback(step_index, total_steps, timestep, "
                         f"latents), got {type(callback).__name__}")
    return callback


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
