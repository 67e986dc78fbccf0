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


def check_callback(callback):
    if callback is not None and not callable(callback):
        raise InputError(f"callback must be a function called as callback(step_index, total_steps, timestep, "
                         f"latents), got {type(callback).__name__}")
    return callback


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


# ---- long pieces, remixes and clips (minriff.longform, minriff.remix, `minriff clips`) ----------
# A long piece is made clip by clip (each clip at most LONG_MAX_CLIP_PX wide), so its cost grows
# linearly with its length; the limits below keep one run's arrays (the spectrogram image: 1.5 kB
# per 10 ms column, the waveforms in and out, the loudness stage's float64 copies) to a few hundred MB.
LONG_MAX_SECONDS = 600.0
LONG_MAX_CLIP_PX = 1024  # the model was trained on 512-px images
REMIX_MAX_SECONDS = 600.0  # per run; `--start/--end` pick the range of a longer file
CLIPS_MAX_COUNT = 10000


def piece_width(duration_s) -> int:
    """Spectrogram width of a long piece: like `image_width` (rounded up to 64 px), up to LONG_MAX_SECONDS."""
    check_long_duration(duration_s)
    return max(1, math.ceil(duration_s * 1000.0 / MS_PER_PIXEL / WIDTH_MULTIPLE - 1e-9)) * WIDTH_MULTIPLE


def check_long_duration(duration_s) -> float:
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)) or not math.isfinite(duration_s) \
            or duration_s <= 0:
        raise InputError(f"duration must be a positive number of seconds, got {duration_s!r}")
    if duration_s > LONG_MAX_SECONDS:
        raise InputError(f"duration {duration_s:g} s is above the limit of {LONG_MAX_SECONDS:g} s for one long piece")
    return float(duration_s)


def check_clip_geometry(clip_px, overlap_px) -> tuple[int, int]:
    """Outpainting windows: `clip_px` wide, the first `overlap_px` of each known (the end of the
    previous clip). Both on the 64-px grid (8 latent columns; Riffusion's seed images have a beat
    every 64 px), so the beat grid of a seed image carries through every clip."""
    for name, v in (("clip width", clip_px), ("overlap", overlap_px)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 or v % WIDTH_MULTIPLE:
            raise InputError(f"{name} must be a positive multiple of {WIDTH_MULTIPLE} px, got {v!r}")
    if clip_px > LONG_MAX_CLIP_PX:
        raise InputError(f"clip width {clip_px} px is above the limit of {LONG_MAX_CLIP_PX} px")
    if overlap_px > clip_px - WIDTH_MULTIPLE:
        raise InputError(f"overlap {overlap_px} px leaves nothing new in a {clip_px}-px clip; it must be at most "
                         f"{clip_px - WIDTH_MULTIPLE} px")
    return int(clip_px), int(overlap_px)


def parse_time(text) -> float:
    """A time on the command line: `20`, `20s`, `1.5s`, `1:30` (m:ss) -> seconds."""
    s = str(text).strip().lower()
    try:
        if ":" in s:
            minutes, _, secs = s.partition(":")
            value = 60.0 * int(minutes) + float(secs)
        else:
            value = float(s[:-1] if s.endswith("s") else s)
    except ValueError:
        raise InputError(f"cannot read {text!r} as a time: use seconds (20, 20s, 1.5s) or m:ss (1:30)") from None
    if not math.isfinite(value) or value < 0:
        raise InputError(f"time must be a finite number of seconds >= 0, got {text!r}")
    return value


def check_prompt_schedule(schedule, duration_s: float) -> list[tuple[float, str]]:
    """[(seconds, prompt), ...] -> sorted by time; each time in (0, duration), no two alike."""
    out = []
    for item in schedule or ():
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InputError(f"a prompt schedule entry must be (seconds, prompt), got {item!r}")
        t, prompt = item
        t = parse_time(t) if isinstance(t, str) else t
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 < t < duration_s:
            raise InputError(f"prompt time {t!r} must lie inside the piece, between 0 and {duration_s:g} s "
                             "(the main prompt holds at 0 s)")
        out.append((float(t), check_prompt(prompt, f"prompt at {t:g} s")))
    out.sort(key=lambda e: e[0])
    for (a, _), (b, _) in zip(out, out[1:]):
        if a == b:
            raise InputError(f"two prompts at {a:g} s; give each time once")
    return out


def check_remix_strength(strength) -> float:
    """Remix strength in [0, 1]: 0 returns the input's own spectrogram round trip."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise InputError(f"remix strength must be a number in [0, 1], got {strength!r}")
    return float(strength)


def check_time_range(start_s, end_s, file_s: float, limit_s: float = REMIX_MAX_SECONDS) -> tuple[float, float]:
    """A range [start, end) of a file `file_s` seconds long -> (start, end): end defaults to (and is
    clamped to) the end of the file; start must lie inside it and before end; at most `limit_s` long."""
    start = 0.0 if start_s is None else start_s
    for name, v in (("start", start), ("end", end_s)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            raise InputError(f"{name} must be a number of seconds >= 0, got {v!r}")
    if end_s is not None and end_s <= start:
        raise InputError(f"end ({end_s:g} s) must come after start ({start:g} s)")
    if start >= file_s:
        raise InputError(f"start ({start:g} s) is at or after the end of the audio ({file_s:.2f} s)")
    end = file_s if end_s is None else min(float(end_s), file_s)
    if end - start > limit_s:
        raise InputError(f"the range is {end - start:.0f} s long; the limit is {limit_s:g} s per run "
                         "(pick a part with --start/--end)")
    return float(start), float(end)


def check_clip_request(count, seconds) -> tuple[int, float]:
    """`minriff clips`: a number of clips >= 1 and a positive length (whole milliseconds, as the original)."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= CLIPS_MAX_COUNT:
        raise InputError(f"number of clips must be an integer from 1 to {CLIPS_MAX_COUNT}, got {count!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or seconds < 0.001 or seconds > 3600:
        raise InputError(f"clip length must be between 0.001 and 3600 seconds, got {seconds!r}")
    return int(count), float(seconds)
