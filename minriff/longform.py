"""Long pieces: a spectrogram grown clip by clip to the right by outpainting.

    image = riff.generate_long("lofi hip hop beat", duration_s=60, seed=1)    # (512, 6016, 3) uint8
    wave = riff.spectrogram_to_audio(image)                                   # 60.15 s, one pass

How (`generate_long` below):
1. `plan_clips`: the piece is W px wide (the duration rounded up to 64 px, as `generate`) and is
   covered by windows of `clip_px` (512: what the model was trained on). The first window is all
   new; each later one starts `overlap_px` (128 px = 1.28 s) before the end of the piece so far:
   that part of it is known, the rest (384 px) is new. The last window is narrower if need be.
2. Each window is denoised with its own noise: clip 0 from Generator(seed) (so it equals
   `generate_spectrogram` with that seed and no seed image), clip k from a seed derived from
   (seed, k). The known columns hold the previous window's final latents z; after every step they
   are put back, noised to the level the latents are at after that step: add_noise(z, noise,
   next timestep), and z itself after the last step (a latent mask: 1 on the known columns, 0 on
   the new). The new columns are denoised freely and see the known ones through the UNet's
   convolutions and self-attention, so the music continues instead of restarting.
3. The last `overlap_px` of each window's latents become the next window's known part.
4. Each window is decoded by the VAE; the piece takes the new columns from it and, over the known
   columns, crossfades linearly from the previous window's decoding to this one (the latents there
   are identical; only the VAE's view of their neighbours differs).
5. Audio: `riff.spectrogram_to_audio(image)` turns the whole piece into sound in one pass, the
   phase running on across every clip (pieces of 4096 px crossfaded over 64 px: bounded memory).

Mask timing, compared with the original: `riffuse` (reference/riffusion.md §2.5) puts the kept
region back noised to the timestep of the step *just taken*, one step noisier than the latents
around it, so its kept region never comes back clean. Outpainting needs the known part exactly, so
here the level is the one the latents are at (as diffusers' inpainting pipelines do).

With a seed image (`seed_image=`, e.g. og_beat): the seed is tiled along the piece (column x of the
piece is column x mod its width) and every window starts from its tile by image-to-image at
`strength` (diffusers' img2img schedule), known columns as above. Riffusion's seed images are 2
bars of 4/4 with a beat every 64 px; the windows, overlaps and tiles all sit on that grid, so the
beat runs through the whole piece. Tiles are VAE-encoded once per phase.

Prompt schedule: `prompt_schedule=[(20.0, "jazz"), ...]`: text states at time t are interpolated
linearly between the keyframes (the main prompt at 0 s; after the last keyframe its prompt holds);
each clip uses the states at the middle of its new part. The negative prompt holds throughout.

Everything is deterministic per seed. One progress bar counts all clips' steps and VAE stages.
This module is the pipeline's (`Riffusion.generate_long` calls it); it takes the Riffusion object.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from minriff import schedulers
from minriff.errors import InputError
from minriff.inputs import (
    HEIGHT,
    MS_PER_PIXEL,
    check_callback,
    check_clip_geometry,
    check_guidance,
    check_prompt,
    check_prompt_schedule,
    check_scheduler,
    check_steps,
    check_strength,
    piece_width,
)
from minriff.latents import lerp
from minriff.progress import Progress
from minriff.rng import Generator

CLIP_PX = 512
OVERLAP_PX = 128  # 1.28 s: two beats of Riffusion's seed images


@dataclass(frozen=True)
class Clip:
    """One outpainting window: piece columns [start, start + width); the first `known` are known."""

    index: int
    start: int
    width: int
    known: int

    @property
    def end(self) -> int:
        return self.start + self.width

    @property
    def new_start(self) -> int:
        return self.start + self.known


@dataclass(frozen=True)
class ClipDone:
    """What `on_clip` sees after each clip: its window, final latents (1, 4, 64, width/8), its own
    decoding (512, width, 3), the known latents it was given (None for the first), the time (s)
    whose text states it used, and with a seed image the latents its img2img started from (the
    encoded seed tile under the window; else None)."""

    clip: Clip
    latents: np.ndarray
    image: np.ndarray
    known_latents: np.ndarray | None
    prompt_time: float
    start_latents: np.ndarray | None = None


def plan_clips(total_px: int, clip_px: int = CLIP_PX, overlap_px: int = OVERLAP_PX) -> list[Clip]:
    """The windows that cover a piece of `total_px` columns (module docstring, step 1)."""
    clips = [Clip(0, 0, min(clip_px, total_px), 0)]
    while clips[-1].end < total_px:
        start = clips[-1].end - overlap_px
        end = min(start + clip_px, total_px)
        clips.append(Clip(len(clips), start, end - start, overlap_px))
    return clips


def derived_seed(seed: int, stream: str, index: int) -> int:
    """A seed for the `index`-th draw of a named stream, independent of the others (a hash)."""
    digest = hashlib.blake2b(f"minriff/{stream}/{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def clip_seed(seed: int, index: int) -> int:
    return seed if index == 0 else derived_seed(seed, "clip", index)


class PromptSchedule:
    """Text states over time: keyframes (0, prompt), (t1, p1), ... interpolated linearly."""

    def __init__(self, riff, prompt: str, schedule):
        self.times = [0.0] + [t for t, _ in schedule]
        self.prompts = [prompt] + [p for _, p in schedule]
        self.riff = riff

    def states(self, t: float) -> np.ndarray:
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        here = self.riff.encode_prompt(self.prompts[i])
        if i + 1 == len(self.times):
            return here
        alpha = np.float32((t - self.times[i]) / (self.times[i + 1] - self.times[i]))
        return lerp(here, self.riff.encode_prompt(self.prompts[i + 1]), alpha).astype(np.float32)


def _tile(rgb: np.ndarray, start: int, width: int) -> np.ndarray:
    """Columns start .. start + width of the seed image repeated along time."""
    return np.ascontiguousarray(rgb[:, (start + np.arange(width)) % rgb.shape[1]])


def _outpaint(riff, clip: Clip, scheduler, steps: int, strength: float, context, guidance: float, gen,
              known: np.ndarray | None, start_latents: np.ndarray | None, bar, cache=None) -> np.ndarray:
    """Denoise one window (module docstring, step 2) -> its final latents (1, 4, 64, width/8)."""
    shape = riff.latent_shape(clip.width)
    k = clip.known // riff.latent_downscale
    sched = riff.make_scheduler(scheduler, steps)
    noise = gen.randn(shape)
    z = np.zeros(shape, np.float32) if start_latents is None else start_latents.copy()
    if known is not None:
        z[..., :k] = known
    if start_latents is None:
        timesteps = list(sched.timesteps)
        latents = noise * np.float32(sched.init_noise_sigma)
    else:
        timesteps = list(schedulers.img2img_timesteps(sched, steps, strength))
        latents = np.asarray(sched.add_noise(z, noise, timesteps[0]), dtype=np.float32)
    if not k:
        return riff._sample(sched, timesteps, latents.astype(np.float32), context, guidance, "", generator=gen,
                            bar=bar, cache=cache)
    keep = np.zeros((1, 1, 1, shape[3]), np.float32)
    keep[..., :k] = 1.0

    def blend(x, level):  # the known columns at noise level `level` (None: clean)
        kept = z if level is None else np.asarray(sched.add_noise(z, noise, level), dtype=np.float32)
        return (kept * keep + x * (1.0 - keep)).astype(np.float32)

    def after_step(x, i):
        return blend(x, timesteps[i + 1] if i + 1 < len(timesteps) else None)

    latents = blend(latents.astype(np.float32), timesteps[0])
    return riff._sample(sched, timesteps, latents, context, guidance, "", after_step=after_step, generator=gen,
                        bar=bar, cache=cache)


def _place(out: np.ndarray, clip: Clip, image: np.ndarray) -> None:
    """Put a window's decoding into the piece: new columns as they are, known ones crossfaded."""
    if clip.known:
        ramp = ((np.arange(clip.known) + 0.5) / clip.known).astype(np.float32)[None, :, None]
        prev = out[:, clip.start:clip.new_start].astype(np.float32)
        mixed = prev + ramp * (image[:, :clip.known].astype(np.float32) - prev)
        out[:, clip.start:clip.new_start] = np.round(mixed).astype(np.uint8)
    out[:, clip.new_start:clip.end] = image[:, clip.known:]


def generate_long(riff, prompt: str, duration_s: float = 60.0, *, negative_prompt: str | None = None,
                  steps: int = 30, guidance: float = 7.0, seed: int | None = None, scheduler=None,
                  seed_image=None, strength: float = 0.75, prompt_schedule=(), clip_px: int = CLIP_PX,
                  overlap_px: int = OVERLAP_PX, on_clip=None, cache=None) -> np.ndarray:
    """A piece of `duration_s` seconds (up to inputs.LONG_MAX_SECONDS) -> (512, W, 3) uint8, W the
    duration rounded up to 64 px; `Riffusion.generate_long` documents the arguments. `cache`: a
    `deepcache.DeepCache` (each window starts with a full step)."""
    check_prompt(prompt)
    steps, guidance = check_steps(steps), check_guidance(guidance)
    total = piece_width(duration_s)
    schedule = check_prompt_schedule(prompt_schedule, total * MS_PER_PIXEL / 1000.0)
    clip_px, overlap_px = check_clip_geometry(clip_px, overlap_px)
    scheduler = check_scheduler(riff._scheduler_or(scheduler, "dpmpp2m"))
    check_callback(on_clip)
    seed = riff.last_seed = riff._seed_or_random(seed)
    probe = riff.make_scheduler(scheduler, steps)
    if not callable(getattr(probe, "add_noise", None)):
        raise InputError(f"scheduler {type(probe).__name__} has no add_noise, which outpainting needs")
    rgb = None
    if seed_image is not None:
        strength = check_strength(strength)
        rgb = riff.check_image(seed_image)
        n_steps = len(schedulers.img2img_timesteps(probe, steps, strength))
    else:
        n_steps = len(probe.timesteps)
    clips = plan_clips(total, clip_px, overlap_px)
    texts = PromptSchedule(riff, prompt, schedule)

    def uncond():
        return riff.encode_prompt(negative_prompt or "")

    stages = riff.vae.stages
    bar = Progress(len(clips) * (n_steps + stages), f"clip 1/{len(clips)}", riff.quiet)
    seed_latents: dict[tuple[int, int], np.ndarray] = {}
    out = np.zeros((HEIGHT, total, 3), np.uint8)
    known = None
    f = riff.latent_downscale
    for clip in clips:
        bar.label = f"clip {clip.index + 1}/{len(clips)}"
        start = None
        if rgb is not None:
            key = (clip.start % rgb.shape[1], clip.width)
            if key not in seed_latents:
                gen = Generator(derived_seed(seed, "seed-image", key[0]))
                seed_latents[key] = riff.encode_image(_tile(rgb, clip.start, clip.width), gen, progress=lambda: None)
            start = seed_latents[key]
        t_mid = (clip.new_start + clip.end) / 2 * MS_PER_PIXEL / 1000.0
        context = riff._context(texts.states(t_mid), uncond, guidance)
        latents = _outpaint(riff, clip, scheduler, steps, strength, context, guidance,
                            Generator(clip_seed(seed, clip.index)), known, start, bar, cache)
        image = riff.decode_latents(latents, progress=bar.update)
        _place(out, clip, image)
        if on_clip is not None:
            on_clip(ClipDone(clip, latents.copy(), image, None if known is None else known.copy(), t_mid,
                             None if start is None else start.copy()))
        known = latents[..., (clip.width - overlap_px) // f:].copy()
    bar.close()
    return out
