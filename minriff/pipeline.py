"""`Riffusion`: text -> spectrogram image -> audio, on minriff's own models and kernels.

    from minriff import Riffusion
    riff = Riffusion.load()                       # newest weights found, else downloaded once (see load)
    wave, sr = riff.generate_audio("jazz piano solo", seed=42)

A Riffusion is composed of parts, each replaceable: `Riffusion(unet=…, vae=…, text_encoder=…,
tokenizer=…, scheduler=…, spectrogram=SpectrogramParams(…), seed=…, backend=…)`; parts not given
come from the weights file (`weights=` path, else found or, on a first run, downloaded: `Riffusion.load`).

Read this file top to bottom: construction, then the sampling loop (`_sample`, `_eps`: the whole
of diffusion is there), then the models' entry points (text, image <-> latents), then the three
ways to make a spectrogram, then audio, then LoRA adapters (minriff/lora.py), then the parts API
(parameters, clone, save).

- `generate_spectrogram`: text-to-image (optionally image-to-image with `init_image`), diffusers'
  StableDiffusion(Img2Img)Pipeline semantics, classifier-free guidance with the negative prompt;
- `interpolate_styles`: between two prompts/seeds (lerp of text states, slerp of noises);
- `riffuse`: one request of the original Riffusion server (reference/riffusion.md §2.3-2.5).

Longer music: `generate_long` (clip by clip, outpainting: minriff.longform) and `remix`
(audio-to-audio over spectrogram windows: minriff.remix).

Guidance > 1 is classifier-free guidance (UNet batch [negative, prompt]); at guidance <= 1, in all
three, the UNet runs at batch 1 on the prompt alone and the negative prompt is never encoded, as in
diffusers: the few-step schedulers (`lcm`, `tcd`, with an LCM-/TCD-LoRA) run at guidance 1.

All three take `decoder=` ("full": the VAE, the default; "taesd": the tiny autoencoder, ~9x faster
and rougher) and `encoder=` for seed/init images; `decode_preview(latents)` is TAESD's quick look
for step callbacks.

All three take `callback=fn`: `fn(step_index, total_steps, timestep, latents)` runs after every
denoising step (index 0 .. total_steps - 1; total_steps is the number of steps actually run, fewer
than `steps` for image-to-image); `latents` (1, 4, 64, W/8) is a read-only view, so copy it to keep
it (`latents.copy()`). The return value is ignored; an exception raised in it stops the run.

All three take `cache_interval=N` (DeepCache, `minriff.deepcache`; off by default): the UNet runs
fully every N steps and only its shallow branch `cache_branch` (0 = the least) in between, from the
deep feature of the last full step; `cache_schedule="quadratic"` places the full steps
non-uniformly. Faster per step, approximate; interval 1 changes nothing.

All three take `controls=[(controlnet, image, scale), ...]` (ControlNet, `minriff.controlnet`: a
ControlNetModel or a converted ControlNet file, the control image, the conditioning scale) with
`control_start`, `control_end` (the fraction of the run it acts in) and `guess_mode`.

Image geometry and the duration limit: `minriff.inputs`.
"""
from __future__ import annotations

import copy
import math
import os

import numpy as np

from minriff import (
    atomic,
    controlnet,
    deepcache,
    kernels,
    longform,
    prompt_weighting,
    schedulers,
    sysinfo,
    values,
    weights,
)
from minriff import remix as remix_mod
from minriff.audio.spectrogram import SpectrogramParams, audio_to_image, image_to_audio
from minriff.configs import SD15_SCHEDULER, ModelConfig
from minriff.errors import InputError, MinriffError, NumericsError, WeightsError
from minriff.inputs import (
    HEIGHT,
    MAX_PROMPT_CHARS,
    WIDTH_MULTIPLE,
    check_alpha,
    check_autoencoder,
    check_callback,
    check_guidance,
    check_negative_prompt,
    check_prompt,
    check_scheduler,
    check_seed,
    check_steps,
    check_strength,
    image_width,
    model_image,
    random_seed,
)
from minriff.latents import as_rgb_array, fit_width, image_to_model, lerp, mask_to_latent, model_to_image, slerp
from minriff.lora import LoraInfo, LoraStack
from minriff.models.init import COMPONENTS
from minriff.progress import Progress, StageProgress
from minriff.riffuse import PromptInput
from minriff.rng import Generator
from minriff.weights import taesd as taesd_weights
from minriff.weights.firstrun import ensure_weights
from minriff.weights.format import MissingTokenizer, config_dicts, write_weights

SAMPLE_RATE = 44100  # Riffusion's SpectrogramParams
# Riffusion.kernel_cache_budget's default outside low_memory: room for all of SD 1.5's transformed
# conv weights (4.1 GiB: F(4x4, 3x3)'s are 4x the weights as float32, F(2x2, 3x3)'s 1.8x) and its
# float16 linear and 8x8 conv weights widened to float32 (1.2 GiB). A full-size UNet step, cache
# filled (batch 2, 64x64, 3 interleaved rounds): budget 0 6.18 s, 2 GiB 6.40 (the FCFS fill caches
# the down path's layers; noise), 3 GiB 5.96, 4.5 GiB 5.81; the widened weights on top: 5.79 against
# 5.87 s (5 interleaved rounds). MINRIFF_KERNEL_CACHE_MB sets it (0: off).
KERNEL_CACHE_MB = 5632
# Filling the cache (4.1 GiB of fresh memory, first touched) cost ~3 s of a loop here, and a full
# guided step saves ~0.37 s once it is filled: the fast preset's 4-step loop went 8.2 -> 11.1 s with
# it (bench clip --preset fast, full size), the quality preset's 30 steps 174 -> 169 s. Loops with
# fewer steps than this use only what an earlier loop left paged in (unless kernel_cache_bytes is set).
KERNEL_CACHE_MIN_STEPS = 12


def _available_bytes() -> int:
    """Memory available now (sysinfo); where that cannot be read, as if plenty were free."""
    free = sysinfo.available_memory()
    return 1 << 62 if free is None else free


def default_kernel_cache_bytes(backend: str | None = None) -> int:
    """MINRIFF_KERNEL_CACHE_MB when set, else KERNEL_CACHE_MB but at most half the memory the system
    has available now (Linux: MemAvailable; a server on an 8 GB laptop must not be pushed into
    swap for a 6% faster step), in bytes. `backend` (default: the current one) is the one whose
    pool of the last loop's buffers counts as available."""
    raw = os.environ.get("MINRIFF_KERNEL_CACHE_MB")
    if raw is None:
        # (the pool of the last loop's buffers is ours to reuse, so it counts as available)
        return min(KERNEL_CACHE_MB << 20, (_available_bytes() + kernels.weight_cache_pooled_bytes(backend)) // 2)
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not 0 <= mb < float(1 << 40):  # also false for nan
        raise InputError(f"MINRIFF_KERNEL_CACHE_MB must be a number of megabytes >= 0 (0: no cache), got {raw!r}")
    return int(mb * (1 << 20))


class Riffusion:
    """The models plus the sampling loops. `Riffusion.load(path)`, or `Riffusion(models)` with the dict
    `minriff.weights.load_models` / `minriff.models.random_models` return, or `Riffusion(unet=…, …)`."""

    def __init__(self, models: dict | None = None, *, unet=None, vae=None, text_encoder=None, tokenizer=None,
                 scheduler=None, spectrogram: SpectrogramParams | None = None, seed: int | None = None,
                 backend: str = "cpu", quiet: bool = False, weights_path=None, source: str = "",
                 taesd=None, decoder: str = "full", encoder: str = "full", on_demand=None):
        if backend not in kernels.BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(kernels.BACKENDS)}")
        parts = {"text_encoder": text_encoder, "unet": unet, "vae": vae, "tokenizer": tokenizer}
        if models is None and any(p is None for p in parts.values()):
            file = ensure_weights(weights_path, quiet=quiet)
            models, source = weights.load_models(file, quiet=quiet), source or str(file)
        models = dict(models or {})
        for name, part in parts.items():
            if part is not None:
                models[name] = part
        kernels.backend(backend)
        self.F = kernels.ops(backend)
        self.backend = backend
        self._parts = {name: models[name] for name in COMPONENTS}
        self._on_demand = on_demand  # (weights file, dtype): parts not loaded come from it when used
        if on_demand is None and any(m is None for m in self._parts.values()):
            raise InputError("Riffusion needs a text_encoder, unet and vae (or a weights file to load them from)")
        self.tokenizer = models["tokenizer"]
        self.config = models["config"] if on_demand else ModelConfig(*(m.config for m in self._parts.values()))
        self.scheduler_config = dict(models.get("scheduler_config") or SD15_SCHEDULER)
        self.scheduler = None if scheduler is None else check_scheduler(scheduler)
        if spectrogram is not None and not isinstance(spectrogram, SpectrogramParams):
            raise InputError(f"spectrogram must be a SpectrogramParams, got {type(spectrogram).__name__}")
        self.spectrogram = spectrogram
        self.seed = None if seed is None else check_seed(seed)
        self.quiet = quiet
        self.source = source
        for m in self._parts.values():
            if m is not None:
                self._to_backend(m)
        self._text_cache: dict[str, np.ndarray] = {}
        self._lora = LoraStack()
        self.decoder, self.encoder = check_autoencoder(decoder, "decoder"), check_autoencoder(encoder, "encoder")
        self._taesd = taesd if taesd is None or isinstance(taesd, (str, os.PathLike)) else self._attach_taesd(taesd)
        # bytes of weight forms the kernels may keep across a sampling loop's steps (None: the default,
        # see kernel_cache_budget); 0 turns the cache off
        self.kernel_cache_bytes: int | None = None

    def _to_backend(self, model):
        if self.backend == "cuda":  # the cuda kernels take float32 weights: float16-held ones are widened once here
            model.apply_to_parameters(lambda a: self.F.asarray(a, dtype=np.float32) if a.dtype == np.float16
                                      else self.F.asarray(a))
        return model

    # ---- the models, resident or loaded on demand (low_memory) ------------------------------------
    def _part(self, name: str):
        model = self._parts[name]
        if model is None:  # low_memory: load it, dropping the other networks first (one resident at a time)
            for other in COMPONENTS:
                self._parts[other] = None
            path, dtype = self._on_demand
            model = self._parts[name] = self._to_backend(weights.load_component(path, name, dtype, self.quiet))
        return model

    def _set_part(self, name: str, model) -> None:
        self.keep_loaded()  # a model given by hand cannot be reloaded from the file
        self._parts[name] = model

    text_encoder = property(lambda self: self._part("text_encoder"), lambda self, m: self._set_part("text_encoder", m))
    unet = property(lambda self: self._part("unet"), lambda self, m: self._set_part("unet", m))
    vae = property(lambda self: self._part("vae"), lambda self, m: self._set_part("vae", m))

    @property
    def low_memory(self) -> bool:
        """True when the networks are loaded on demand, one at a time (`Riffusion.load(low_memory=True)`)."""
        return self._on_demand is not None

    def kernel_cache_budget(self, steps: int | None = None) -> int:
        """Bytes the kernels may keep across the steps of one sampling loop of `steps` steps
        (`kernels.weight_cache`: on the cpu backend the Winograd-transformed 3x3 conv weights, 4.1 GiB
        for SD 1.5's UNet, which saves their transform on every step after the first).
        `kernel_cache_bytes` when set; else 0 under low_memory (its point is a low peak); else
        `default_kernel_cache_bytes()`, but for loops of fewer than KERNEL_CACHE_MIN_STEPS steps only
        as much as an earlier loop left paged in (the pool, `kernels.weight_cache_pooled_bytes`):
        filling fresh memory costs more than a few steps win back. The cache's entries are dropped
        when the loop ends; their memory is pooled for the next loop (0 frees it)."""
        if self.kernel_cache_bytes is not None:
            return int(self.kernel_cache_bytes)
        if self.low_memory:
            return 0
        budget = default_kernel_cache_bytes(self.backend)
        if steps is not None and steps < KERNEL_CACHE_MIN_STEPS:
            return min(budget, kernels.weight_cache_pooled_bytes(self.backend))
        return budget

    def keep_loaded(self) -> None:
        """Load every network and keep them (ends low_memory): done before anything changes weights
        in place (LoRA, set_parameters), since a reload from the file would lose the change."""
        if self._on_demand is None:
            return
        path, dtype = self._on_demand
        for name in COMPONENTS:
            if self._parts[name] is None:
                self._parts[name] = self._to_backend(weights.load_component(path, name, dtype, self.quiet))
        self._on_demand = None

    @classmethod
    def load(cls, path=None, backend: str = "cpu", quiet: bool = False, dtype=None, low_memory: bool = False,
             **parts) -> Riffusion:
        """Load a converted weights file: `path`, else what `minriff.weights.find_weights()` finds, else (a
        first run) riffusion-model-v1 from the Hugging Face cache or the Hub, converted once into
        ~/.cache/minriff (`minriff.weights.firstrun`). `dtype`: the dtype the weights are held in; None
        (default) keeps them as stored in the file (fp16 files: half the memory of float32, widened
        where the ops use them; compute is float32 either way), float32, float16, or float64 (the
        model then also computes in float64: reference-precision runs). The cuda backend holds
        float16 weights as float32 copies on the device.
        `low_memory=True`: each network (text encoder, UNet, VAE) is loaded from the file when a stage
        needs it and the others are dropped first, so only one is resident: a one-shot clip peaks
        lower (SD 1.5: ~0.4 GB less for the text encoder and VAE during denoising, and the 1.7 GB
        UNet is gone while the VAE decodes), but every call reloads what it uses (seconds). For one
        clip, not a server; LoRAs and `set_parameters` end it (`keep_loaded`).
        `parts` as for the constructor (scheduler=, spectrogram=, seed=, or a model to use instead)."""
        if backend not in kernels.BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(kernels.BACKENDS)}")
        dtype = None if dtype is None else weights.compute_dtype(dtype)  # before anything is downloaded
        file = ensure_weights(path, quiet=quiet)
        lazy = bool(low_memory) and not any(parts.get(name) is not None for name in COMPONENTS)
        models = weights.load_models(file, dtype=dtype, quiet=quiet, components=() if lazy else COMPONENTS)
        return cls(models, backend=backend, quiet=quiet, source=str(file), on_demand=(file, dtype) if lazy else None,
                   **parts)

    # ---- the sampling loop ----------------------------------------------------------------------
    def _sample(self, sched, timesteps, latents, context, guidance, label, after_step=None, generator=None,
                callback=None, cache=None, bar=None, control=None):
        """Denoise `latents` over `timesteps`: the UNet predicts the noise, the scheduler steps.
        `after_step(latents, step_index)` may change the latents after each step (mask blending);
        `cache`: a `deepcache.DeepCache` (most steps then run only the UNet's shallow branch);
        `bar`: a Progress to advance instead of a new one labelled `label`; `control`: a
        `controlnet.ControlRun` (the UNet then gets its ControlNets' residuals)."""
        with kernels.weight_cache(self.kernel_cache_budget(len(timesteps)), self.backend):
            return self._sample_steps(sched, timesteps, latents, context, guidance, label, after_step, generator,
                                      callback, cache, bar, control)

    def _sample_steps(self, sched, timesteps, latents, context, guidance, label, after_step, generator, callback,
                      cache, bar, control):
        bar = Progress(len(timesteps), label, self.quiet) if bar is None else bar
        unet = self.unet if cache is None else cache.bind(self.unet, sched.timesteps, timesteps)
        if control is not None:
            unet = control.bind(unet, len(timesteps), guidance > 1.0)
        for i, t in enumerate(timesteps):
            x_in = sched.scale_model_input(latents, t)
            eps = self._eps(np.asarray(x_in, dtype=np.float32), t, context, guidance, unet)
            latents = np.asarray(sched.step(eps, t, latents, generator=generator), dtype=np.float32)
            if after_step is not None:
                latents = after_step(latents, i)
            if callback is not None:
                seen = latents.view()
                seen.flags.writeable = False  # the callback may look, not change the run
                callback(i, len(timesteps), t.item() if hasattr(t, "item") else t, seen)
            bar.update()
        return latents

    def _eps(self, x: np.ndarray, t, context, guidance: float, unet=None) -> np.ndarray:
        """Noise prediction with classifier-free guidance (batch [uncond, cond]) when guidance > 1;
        `unet`: the UNet or what stands for it (deepcache.CachedUNet), default self.unet."""
        F = self._ops()
        cfg = guidance > 1.0
        x_in = np.concatenate([x, x]) if cfg else x
        unet = self.unet if unet is None else unet
        eps = np.asarray(F.to_host(unet(F.asarray(x_in), t, context)), dtype=np.float32)
        if not cfg:
            return eps
        uncond, cond = eps[:1], eps[1:]
        return uncond + np.float32(guidance) * (cond - uncond)

    def _context(self, cond: np.ndarray, uncond, guidance: float):
        """[uncond(), cond] for classifier-free guidance (guidance > 1); else cond alone, batch 1, and
        `uncond` (a function: the negative prompt's states) is never called, as in diffusers."""
        both = np.concatenate([uncond(), cond]) if guidance > 1.0 else cond
        return self.F.asarray(both.astype(np.float32))

    def make_scheduler(self, scheduler, steps: int, sd_pipeline: bool = True):
        """A ready scheduler for one run: a fresh one by name, or a deep copy of a scheduler object
        (so a run never changes the object, nor leaks state into the next run). By name, `sd_pipeline`
        builds it from the config as diffusers' Stable Diffusion pipelines use it
        (`schedulers.sd_pipeline_config`: no x0 clipping in DDIM); False (riffuse, ControlNet runs,
        as their diffusers pipelines) from the weights' config as it is. Objects are used as given."""
        scheduler = check_scheduler(scheduler)
        if isinstance(scheduler, str):
            config = schedulers.sd_pipeline_config(self.scheduler_config) if sd_pipeline else self.scheduler_config
            sched = schedulers.make(scheduler, config)
        else:
            sched = copy.deepcopy(scheduler)
        sched.set_timesteps(int(steps))
        return sched

    def _scheduler_or(self, scheduler, default: str):
        return scheduler if scheduler is not None else (self.scheduler if self.scheduler is not None else default)

    def _seed_or_random(self, seed) -> int:
        if seed is not None:
            return check_seed(seed)
        return self.seed if self.seed is not None else random_seed()

    # ---- models: text, image <-> latents --------------------------------------------------------
    def _ops(self):
        """This pipeline's kernels, also made the current backend: model code calls kernels.ops(),
        and another Riffusion object may have chosen a different backend since."""
        kernels.backend(self.backend)
        return self.F

    @property
    def latent_downscale(self) -> int:
        return self.config.vae.downscale

    @property
    def latent_channels(self) -> int:
        return self.config.unet.in_channels

    def latent_shape(self, width: int) -> tuple:
        f = self.latent_downscale
        return (1, self.latent_channels, HEIGHT // f, width // f)

    def encode_prompt(self, prompt: str) -> np.ndarray:
        """(1, 77, C) text states of a prompt with the original's (word:1.5) weighting syntax; cached."""
        if prompt not in self._text_cache:
            values.text(prompt, "prompt", MAX_PROMPT_CHARS, allow_empty=True)
            states = prompt_weighting.weighted_embeddings(self.tokenizer, self._run_text_encoder, prompt)
            self._text_cache[prompt] = _finite(np.asarray(states, dtype=np.float32), f"text states of {prompt[:60]!r}")
        return self._text_cache[prompt]

    def _run_text_encoder(self, ids: np.ndarray) -> np.ndarray:
        self._ops()
        return np.asarray(self.F.to_host(self.text_encoder(self.F.asarray(ids))), dtype=np.float32)

    def check_image(self, image, what="seed image") -> np.ndarray:
        """(512, W, 3) uint8 of a seed/init/mask image (PIL or array). Height must be 512 (the mel
        bins), the width 2 to `inputs.MAX_IMAGE_WIDTH` px (checked before any conversion)."""
        return model_image(image, what)

    @staticmethod
    def _model_width(rgb: np.ndarray) -> np.ndarray:
        """A width that is not a multiple of 64 px is stretched (bicubic) to the next multiple, as
        the original's audio-to-audio page did; `fit_width` stretches results back."""
        return fit_width(rgb, math.ceil(rgb.shape[1] / WIDTH_MULTIPLE) * WIDTH_MULTIPLE)

    def encode_image(self, rgb: np.ndarray, generator, encoder: str | None = None, progress=None) -> np.ndarray:
        """(H, W, 3) uint8 -> scaled latents z * scaling_factor, sampled with `generator` (full VAE), or
        TAESD's latents as they are: no sampling and no draw from `generator` (diffusers' `.latents`).
        progress: a function called once per VAE stage (default: a bar of its own)."""
        F = self._ops()
        if self._autoencoder(encoder, "encoder") == "taesd":
            z = F.to_host(self.taesd.encode(F.asarray(image_to_model(rgb))))
            return np.asarray(z, dtype=np.float32) * np.float32(self.taesd.config.scaling_factor)
        progress = progress or Progress(self.vae.stages, "encoding (VAE)", self.quiet).update
        mean, logvar = self.vae.encode(F.asarray(image_to_model(rgb)), progress=progress)
        mean, logvar = F.to_host(mean), F.to_host(logvar)
        eps = generator.randn(mean.shape)
        z = F.to_host(self.vae.sample(F.asarray(mean), F.asarray(logvar), F.asarray(eps)))
        return np.asarray(z, dtype=np.float32) * np.float32(self.config.vae.scaling_factor)

    def decode_latents(self, latents: np.ndarray, decoder: str | None = None, progress=None) -> np.ndarray:
        """Latents (1, 4, h, w) -> (8h, 8w, 3) uint8 with the full VAE or TAESD (default: the
        `decoder=` given at construction, "full" unless set). progress: as for encode_image."""
        vae = self.taesd if self._autoencoder(decoder, "decoder") == "taesd" else self.vae
        z = _finite(latents, "denoised latents") / np.float32(vae.config.scaling_factor)
        self._ops()
        if vae is self.vae:  # ~30 s at 512x512 on a CPU
            progress = progress or Progress(self.vae.stages, "decoding (VAE)", self.quiet).update
            out = vae.decode(self.F.asarray(z.astype(np.float32)), progress=progress)
        else:  # TAESD: a second or two
            out = vae.decode(self.F.asarray(z.astype(np.float32)))
            if progress is not None:
                for _ in range(self.vae.stages):  # the caller counted the full VAE's stages
                    progress()
        return model_to_image(self.F.to_host(out))

    def decode_preview(self, latents: np.ndarray) -> np.ndarray:
        """A quick look at latents mid-run (e.g. from a step callback): TAESD's decode, (8h, 8w, 3) uint8."""
        return self.decode_latents(np.asarray(latents, dtype=np.float32), decoder="taesd")

    # ---- TAESD, the tiny autoencoder (models/taesd.py, weights/taesd.py) -------------------------
    @property
    def taesd(self):
        """AutoencoderTiny, loaded on first use: the `taesd=` of the constructor (a model or a file),
        else the file `weights.taesd.find_taesd` finds ($MINRIFF_TAESD, beside the weights, ./weights/)."""
        if self._taesd is None or isinstance(self._taesd, (str, os.PathLike)):
            path = self._taesd or taesd_weights.find_taesd(beside=self.source or None)
            if path is None:
                raise WeightsError(f"no TAESD weights found ($MINRIFF_TAESD, beside the weights file, ./weights/); "
                                   f"{taesd_weights.HOW_TO_GET}")
            self._taesd = self._attach_taesd(taesd_weights.load_taesd(path))
        return self._taesd

    @property
    def has_taesd(self) -> bool:
        """Whether TAESD is at hand (loads it, as `taesd` does); False instead of its error."""
        try:
            return self.taesd is not None
        except MinriffError:
            return False

    def _attach_taesd(self, model):
        if model.config.latent_channels != self.latent_channels or model.downscale != self.latent_downscale:
            raise WeightsError(f"this TAESD makes {model.config.latent_channels}-channel latents at "
                               f"1/{model.downscale} size; the model needs {self.latent_channels} channels at "
                               f"1/{self.latent_downscale} (madebyollin/taesd is the one for SD v1.x and Riffusion)")
        return model.apply_to_parameters(self.F.asarray) if self.backend == "cuda" else model

    def _autoencoder(self, name: str | None, what: str) -> str:
        """The checked decoder/encoder choice of a call (None: the construction default); TAESD is
        loaded now, so a missing file is reported before the denoising, not after it."""
        name = check_autoencoder(getattr(self, what) if name is None else name, what)
        if name == "taesd":
            _ = self.taesd
        return name

    # ---- text -> spectrogram --------------------------------------------------------------------
    def generate_spectrogram(self, prompt: str, negative_prompt: str | None = None, duration_s: float = 5.0,
                             steps: int = 30, guidance: float = 7.0, seed: int | None = None,
                             scheduler=None, init_image=None, strength: float = 0.75,
                             callback=None, decoder: str | None = None, encoder: str | None = None,
                             cache_interval: int | None = None, cache_branch: int = 0,
                             cache_schedule: str = "uniform", controls=None, control_start: float = 0.0,
                             control_end: float = 1.0, guess_mode: bool = False) -> np.ndarray:
        """Text -> (512, W, 3) uint8 spectrogram. With `init_image` (a 512-px-high spectrogram) this is
        image-to-image at `strength` (diffusers' img2img schedule) and the width is the image's.
        scheduler: a name or object (default: the one given at construction, else dpmpp2m).
        `callback(step_index, total_steps, timestep, latents)` after each step (module docstring).
        decoder / encoder: "full" (the VAE) or "taesd" (default: the construction's).
        cache_interval / cache_branch / cache_schedule: DeepCache (module docstring; off by default).
        controls / control_start / control_end / guess_mode: ControlNet (module docstring).
        The seed used is kept in `self.last_seed`."""
        check_prompt(prompt)
        decoder = self._autoencoder(decoder, "decoder")
        check_autoencoder(self.encoder if encoder is None else encoder, "encoder")  # (used with init_image)
        check_negative_prompt(negative_prompt)
        cache = deepcache.options(self.config.unet, cache_interval, cache_branch, cache_schedule)
        control = controlnet.options(self, controls, control_start, control_end, guess_mode, cache)
        steps, guidance = check_steps(steps), check_guidance(guidance)
        scheduler = check_scheduler(self._scheduler_or(scheduler, "dpmpp2m"))
        rgb = None
        if init_image is None:
            width = image_width(duration_s)
        else:
            strength = check_strength(strength)
            rgb = model_image(init_image, "init image")
            width = rgb.shape[1]
        check_callback(callback)
        seed = self.last_seed = self._seed_or_random(seed)
        gen = Generator(seed)
        cond = self.encode_prompt(prompt)
        context = self._context(cond, lambda: self.encode_prompt(negative_prompt or ""), guidance)
        sched = self.make_scheduler(scheduler, steps, sd_pipeline=control is None)
        if rgb is None:
            latents = gen.randn(self.latent_shape(width)) * np.float32(sched.init_noise_sigma)
            timesteps = list(sched.timesteps)
        else:
            z = self.encode_image(self._model_width(rgb), gen, encoder)
            timesteps = list(schedulers.img2img_timesteps(sched, steps, strength))
            noise = gen.randn(z.shape)
            latents = np.asarray(sched.add_noise(z, noise, timesteps[0]), dtype=np.float32)
        latents = self._sample(sched, timesteps, latents.astype(np.float32), context, guidance,
                               "denoising", generator=gen, callback=callback, cache=cache, control=control)
        return fit_width(self.decode_latents(latents, decoder), width)

    def interpolate_styles(self, prompt_a: str, prompt_b: str, alpha: float, seed_a: int | None = None,
                           seed_b: int | None = None, negative_prompt: str | None = None,
                           duration_s: float = 5.0, steps: int = 30, guidance: float = 7.0,
                           scheduler=None, seed_image=None, denoising: float = 0.75,
                           callback=None, decoder: str | None = None, encoder: str | None = None,
                           cache_interval: int | None = None, cache_branch: int = 0,
                           cache_schedule: str = "uniform", controls=None, control_start: float = 0.0,
                           control_end: float = 1.0, guess_mode: bool = False) -> np.ndarray:
        """A spectrogram between two prompts: text states lerped, the two seeds' noises slerped, at
        `alpha` (0 = A, 1 = B). With `seed_image` it is exactly `riffuse` (img2img at `denoising`).
        seed_a: default the construction seed, else 42; seed_b: default seed_a.
        scheduler: default the construction one, else dpmpp2m from noise, pndm (the original's) with a
        seed image. `callback(step_index, total_steps, timestep, latents)` after each step.
        cache_interval / cache_branch / cache_schedule, controls / control_start / control_end /
        guess_mode: DeepCache and ControlNet, as in `generate_spectrogram`."""
        cache_kw = dict(cache_interval=cache_interval, cache_branch=cache_branch, cache_schedule=cache_schedule,
                        controls=controls, control_start=control_start, control_end=control_end,
                        guess_mode=guess_mode)
        cache = deepcache.options(self.config.unet, cache_interval, cache_branch, cache_schedule)
        scheduler = self._scheduler_or(scheduler, "pndm" if seed_image is not None else "dpmpp2m")
        alpha = check_alpha(alpha)
        check_callback(callback)
        seed_a = check_seed(seed_a, "seed A") if seed_a is not None else (self.seed if self.seed is not None else 42)
        seed_b = seed_a if seed_b is None else check_seed(seed_b, "seed B")
        if seed_image is not None:
            a = PromptInput(prompt_a, seed_a, negative_prompt, denoising, guidance)
            b = PromptInput(prompt_b, seed_b, negative_prompt, denoising, guidance)
            return self.riffuse(a, b, alpha, seed_image, steps=steps, scheduler=scheduler, callback=callback,
                                decoder=decoder, encoder=encoder, **cache_kw)
        check_prompt(prompt_a, "prompt A")
        check_prompt(prompt_b, "prompt B")
        check_negative_prompt(negative_prompt)
        control = controlnet.options(self, controls, control_start, control_end, guess_mode, cache)
        steps, guidance = check_steps(steps), check_guidance(guidance)
        scheduler = check_scheduler(scheduler)
        decoder = self._autoencoder(decoder, "decoder")
        check_autoencoder(self.encoder if encoder is None else encoder, "encoder")  # (used with seed_image)
        shape = self.latent_shape(image_width(duration_s))
        gen = Generator(seed_a)
        noise = slerp(alpha, gen.randn(shape), Generator(seed_b).randn(shape))
        cond = lerp(self.encode_prompt(prompt_a), self.encode_prompt(prompt_b), np.float32(alpha))
        context = self._context(cond, lambda: self.encode_prompt(negative_prompt or ""), guidance)
        sched = self.make_scheduler(scheduler, steps, sd_pipeline=control is None)
        latents = noise * np.float32(sched.init_noise_sigma)
        latents = self._sample(sched, list(sched.timesteps), latents, context, guidance, "denoising", generator=gen,
                               callback=callback, cache=cache, control=control)
        return self.decode_latents(latents, decoder)

    def riffuse(self, start, end, alpha: float, seed_image, mask=None, steps: int = 50,
                scheduler=None, callback=None, decoder: str | None = None, encoder: str | None = None,
                cache_interval: int | None = None, cache_branch: int = 0,
                cache_schedule: str = "uniform", controls=None, control_start: float = 0.0,
                control_end: float = 1.0, guess_mode: bool = False) -> np.ndarray:
        """One request of the original Riffusion server (reference/riffusion.md §2.3-2.5).

        start/end: `riffuse.PromptInput` or dicts with its fields. Text states, guidance and denoising
        are lerped at `alpha`, the start/end seeds' noises slerped; the seed image is encoded (VAE
        sample drawn from a fresh generator seeded with start.seed), noised to the original's start
        timestep and denoised; a mask (black keeps the seed, white regenerates) blends latents after
        every step. Negative prompts, which the original ignored, are honoured (lerped too).
        scheduler: default the construction one, else pndm (the original's). With a scheduler other
        than PNDM the noise level and steps follow diffusers' img2img instead.
        `callback(step_index, total_steps, timestep, latents)` after each step (module docstring; with
        a mask it sees the blended latents). decoder / encoder: "full" or "taesd" (TAESD encodes
        without sampling, so start.seed then only seeds the noise). cache_*: DeepCache, as in
        `generate_spectrogram`; controls / control_start / control_end / guess_mode: ControlNet, as there
        (the control image is stretched to the seed image's model width like the seed image)."""
        cache = deepcache.options(self.config.unet, cache_interval, cache_branch, cache_schedule)
        control = controlnet.options(self, controls, control_start, control_end, guess_mode, cache)
        start = start if isinstance(start, PromptInput) else PromptInput.from_dict(start, "start")
        end = end if isinstance(end, PromptInput) else PromptInput.from_dict(end, "end")
        alpha = check_alpha(alpha)
        check_callback(callback)
        steps = check_steps(steps)
        scheduler = check_scheduler(self._scheduler_or(scheduler, "pndm"))
        decoder, encoder = self._autoencoder(decoder, "decoder"), self._autoencoder(encoder, "encoder")
        for p, name in ((start, "start"), (end, "end")):  # the fields may have changed since construction
            check_prompt(p.prompt, f"{name} prompt")
            check_negative_prompt(p.negative_prompt, f"{name} negative prompt")
            check_seed(p.seed, f"{name} seed")
            check_guidance(p.guidance, f"{name} guidance")
            check_strength(p.denoising, f"{name} denoising")
        guidance = float(lerp(start.guidance, end.guidance, alpha))
        strength = float(lerp(start.denoising, end.denoising, alpha))
        seed_rgb = self.check_image(seed_image)
        width = seed_rgb.shape[1]
        rgb = self._model_width(seed_rgb)
        keep = None
        if mask is not None:
            mask_rgb = self.check_image(mask, "mask image")
            if mask_rgb.shape[:2] != (HEIGHT, width):
                raise InputError(f"mask image is {mask_rgb.shape[1]}x{mask_rgb.shape[0]} px but the seed image is "
                                 f"{width}x{HEIGHT} px; they must match")
            mask_rgb = fit_width(mask_rgb, rgb.shape[1], nearest=True)
            keep = mask_to_latent(mask_rgb, self.latent_downscale, self.latent_channels)

        cond = lerp(self.encode_prompt(start.prompt), self.encode_prompt(end.prompt), np.float32(alpha))
        context = self._context(cond, lambda: lerp(self.encode_prompt(start.negative_prompt or ""),
                                                   self.encode_prompt(end.negative_prompt or ""), np.float32(alpha)),
                                guidance)
        z = self.encode_image(rgb, Generator(start.seed), encoder)
        sched = self.make_scheduler(scheduler, steps, sd_pipeline=False)  # the original RiffusionPipeline
        if isinstance(sched, schedulers.PNDMScheduler):
            t0, timesteps = schedulers.riffusion_img2img_schedule(sched, steps, strength)
        else:  # the original schedule indexes PNDM's n+1 timesteps; others get diffusers' img2img one
            timesteps = schedulers.img2img_timesteps(sched, steps, strength)
            t0 = timesteps[0]
        timesteps = list(timesteps)
        gen_a = Generator(start.seed)
        noise = slerp(alpha, gen_a.randn(z.shape), Generator(end.seed).randn(z.shape))
        latents = np.asarray(sched.add_noise(z, noise, t0), dtype=np.float32)

        def blend(x, i):  # the original blends at the timestep of the step just taken
            kept = np.asarray(sched.add_noise(z, noise, timesteps[i]), dtype=np.float32)
            return kept * keep + x * (1.0 - keep)

        latents = self._sample(sched, timesteps, latents, context, guidance, "riffusing",
                               after_step=blend if keep is not None else None, generator=gen_a, callback=callback,
                               cache=cache, control=control)
        return fit_width(self.decode_latents(latents, decoder), width)

    # ---- longer music: clip by clip, and audio-to-audio ----------------------------------------------
    def generate_long(self, prompt: str, duration_s: float = 60.0, *, negative_prompt: str | None = None,
                      steps: int = 30, guidance: float = 7.0, seed: int | None = None, scheduler=None,
                      seed_image=None, strength: float = 0.75, prompt_schedule=(), clip_px: int = 512,
                      overlap_px: int = 128, on_clip=None, cache_interval: int | None = None,
                      cache_branch: int = 0, cache_schedule: str = "uniform") -> np.ndarray:
        """A piece of any length up to 10 minutes -> (512, W, 3) uint8 (W: `duration_s` rounded up
        to 64 px), grown clip by clip to the right by outpainting (`minriff.longform`): windows of
        `clip_px` whose first `overlap_px` (the end of the previous clip) are kept by latent-mask
        blending at every step. `seed_image`: start every clip from this spectrogram tiled along the
        piece by img2img at `strength`, so its beat grid runs through. `prompt_schedule`:
        [(seconds, prompt), ...] keyframes; text states are interpolated between them (the main
        prompt at 0 s). `on_clip(longform.ClipDone)` after each clip. scheduler: default the
        construction one, else dpmpp2m. `cache_*`: DeepCache as in `generate_spectrogram`, per window.
        `spectrogram_to_audio(image)` makes the audio in one pass.
        The seed used is kept in `self.last_seed`."""
        return longform.generate_long(
            self, prompt, duration_s, negative_prompt=negative_prompt, steps=steps, guidance=guidance, seed=seed,
            scheduler=scheduler, seed_image=seed_image, strength=strength, prompt_schedule=prompt_schedule,
            clip_px=clip_px, overlap_px=overlap_px, on_clip=on_clip,
            cache=deepcache.options(self.config.unet, cache_interval, cache_branch, cache_schedule))

    def remix(self, audio, prompt: str, strength: float = 0.55, *, sample_rate: int | None = None,
              start_s: float | None = None, end_s: float | None = None, negative_prompt: str | None = None,
              steps: int = 25, guidance: float = 7.0, seed: int | None = None, scheduler=None,
              window_px: int = 512, overlap_px: int = 128, join: str = "spectrogram",
              method: str = "nnls", cache_interval: int | None = None, cache_branch: int = 0,
              cache_schedule: str = "uniform") -> tuple[np.ndarray, int]:
        """Audio-to-audio (`minriff.remix`): a file path, or a (C, N) / (N,) array with `sample_rate`,
        from `start_s` to `end_s` (default: all of it, at most 10 minutes per call) -> (waveform (C, n)
        float32, 44100) with exactly the input's length at 44.1 kHz. The spectrogram is cut into
        `window_px` windows overlapping by `overlap_px`, each riffed by img2img at `strength` (0: no
        model call, the input's own spectrogram round trip), crossfaded over the overlaps and made
        audio in one pass (`join="audio"`: per window, crossfaded in the audio). Mono in, mono out;
        stereo in, stereo out (both channels with the same noise); more channels are mixed to mono.
        Defaults follow the original's audio-to-audio page: 25 steps, guidance 7, dpmpp2m. `cache_*`:
        DeepCache as in `generate_spectrogram`, per window."""
        return remix_mod.remix(
            self, audio, prompt, strength, sample_rate=sample_rate, start_s=start_s, end_s=end_s,
            negative_prompt=negative_prompt, steps=steps, guidance=guidance, seed=seed, scheduler=scheduler,
            window_px=window_px, overlap_px=overlap_px, join=join, method=method,
            cache=deepcache.options(self.config.unet, cache_interval, cache_branch, cache_schedule))

    # ---- spectrogram <-> audio ------------------------------------------------------------------
    def spectrogram_to_audio(self, image, method: str = "nnls", seed: int = 0) -> np.ndarray:
        """Spectrogram image -> waveform (C, (W - 1) * 441) float32 at 44.1 kHz (`audio.spectrogram`,
        then the original's loudness stage on the whole), with a progress bar per conversion stage.
        Parameters: the `spectrogram=` given at construction, else Riffusion's (stereo guessed from
        the pixels). Images wider than `join.chunk_width` (4096 px mono) are converted in overlapping
        pieces crossfaded over `join.OVERLAP_PX`, so memory stays ~2 GB whatever the width."""
        return image_to_audio(as_rgb_array(image, "spectrogram image"), self.spectrogram, method=method, seed=seed,
                              loudness="riffusion", progress=StageProgress(self.quiet))

    def spectrogram_to_wave(self, image, method: str = "nnls", seed: int = 0, params: SpectrogramParams | None = None,
                            link_channels: bool = False) -> np.ndarray:
        """`spectrogram_to_audio` without the loudness stage. params: default as there.
        link_channels: both channels of a stereo image start Griffin-Lim from the same random phase,
        so equal channels give equal audio and similar ones stay in phase (`audio.spectrogram`)."""
        return image_to_audio(as_rgb_array(image, "spectrogram image"), params or self.spectrogram, method=method,
                              seed=seed, loudness=None, progress=StageProgress(self.quiet), link_channels=link_channels)

    def audio_to_spectrogram(self, waveform: np.ndarray, sample_rate: int = 44100) -> np.ndarray:
        """Waveform (C, N) -> (512, W, 3) uint8 spectrogram with this pipeline's parameters."""
        params = self.spectrogram or SpectrogramParams()
        if sample_rate != params.sample_rate:
            raise InputError(f"audio must be at {params.sample_rate} Hz, got {sample_rate} Hz "
                             "(`minriff.audio.read_audio` resamples files)")
        wave = np.atleast_2d(np.asarray(waveform, dtype=np.float32))
        return as_rgb_array(audio_to_image(wave, params))

    def generate_audio(self, prompt: str, method: str = "nnls", **kwargs) -> tuple[np.ndarray, int]:
        """Text -> (waveform (C, N) float32, sample_rate). kwargs as for `generate_spectrogram`."""
        image = self.generate_spectrogram(prompt, **kwargs)
        self.last_image = image
        return self.spectrogram_to_audio(image, method=method), SAMPLE_RATE

    # ---- LoRA adapters (minriff/lora.py) ----------------------------------------------------------
    def load_lora(self, path, weight: float = 1.0, name: str | None = None, strict: bool = True) -> str:
        """Merge a LoRA file (kohya-ss, diffusers/PEFT; formats in minriff.weights.lora) into the text
        encoder and UNet at `weight`; returns its name (default: the file's stem). Several stack.
        strict=False skips keys that match no layer (with a warning) instead of refusing the file."""
        self.keep_loaded()
        return self._lora.load(self, path, weight, name, strict)

    def set_lora_weight(self, name: str, weight: float) -> None:
        """Change a loaded LoRA's weight: re-merges only the tensors it touches."""
        self._lora.set_weight(self, name, weight)

    def unload_lora(self, name: str) -> None:
        """Remove a LoRA: the tensors it touched get back the values they had without it, bit for bit."""
        self._lora.unload(self, name)

    @property
    def loras(self) -> list[LoraInfo]:
        """The loaded LoRAs in load order: name, file, weight, rank (largest), targets (layers per component)."""
        return self._lora.infos()

    # ---- the parts API: parameters, clone, save -------------------------------------------------
    def named_parameters(self):
        """(name, array) over the text encoder, UNet and VAE, in that order, each model's in its
        `named_parameters()` order (module definition order); names as in the weights file
        (`unet.down_blocks.0.resnets.0.conv1.weight`)."""
        for comp in COMPONENTS:
            for key, p in getattr(self, comp).named_parameters():
                yield f"{comp}.{key}", p

    @property
    def parameter_count(self) -> int:
        return sum(int(np.prod(p.shape)) for _, p in self.named_parameters())

    def parameters(self) -> np.ndarray:
        """All parameters as one flat float32 vector, in `named_parameters()` order."""
        out = np.empty(self.parameter_count, np.float32)
        i = 0
        for _, p in self.named_parameters():
            n = int(np.prod(p.shape))
            out[i:i + n] = np.asarray(self.F.to_host(p), dtype=np.float32).reshape(-1)
            i += n
        return out

    def set_parameters(self, vector) -> None:
        """Set all parameters from one flat vector (the layout of `parameters()`). A float16-held
        parameter stays float16 when its new values are all exact float16 values, else it becomes
        float32 (never a silent rounding)."""
        v = np.asarray(vector)
        if v.ndim != 1 or v.shape[0] != self.parameter_count:
            raise InputError(f"set_parameters needs a 1-D vector of {self.parameter_count} values (this model's "
                             f"parameter_count), got shape {v.shape}")
        if not np.issubdtype(v.dtype, np.floating):
            raise InputError(f"set_parameters needs floating-point values, got {v.dtype}")
        if self._lora:
            raise InputError(f"set_parameters with LoRAs loaded ({', '.join(i.name for i in self.loras)}): "
                             "unload them first (save() keeps a merged model)")
        self.keep_loaded()
        i = 0
        for comp in COMPONENTS:
            model = getattr(self, comp)
            for key, p in list(model.named_parameters()):
                n = int(np.prod(p.shape))
                model._set(key, self.F.asarray(_held(v[i:i + n].reshape(p.shape), p.dtype)))
                i += n
        self._text_cache.clear()

    def clone(self) -> Riffusion:
        """A deep copy: changing the parameters (or anything else) of one does not change the other."""
        new = copy.copy(self)
        new._parts = {comp: copy.deepcopy(m) for comp, m in self._parts.items()}  # None stays None (low_memory)
        new.tokenizer = copy.deepcopy(self.tokenizer)
        new._taesd = copy.deepcopy(self._taesd)
        new.scheduler = copy.deepcopy(self.scheduler)
        new.scheduler_config = copy.deepcopy(self.scheduler_config)
        new._text_cache = dict(self._text_cache)
        new._lora = self._lora.copy()
        return new

    def save(self, path, dtype: str = "auto") -> int:
        """Write a minriff weights file that `Riffusion.load` reads back to identical outputs.
        dtype "auto": fp16 when every parameter is exactly an fp16 value (a model loaded from an fp16
        file), else fp32; or "fp16" / "fp32". Returns the number of tensors written."""
        atomic.check_target(path)  # before the fp16 scan; the write itself is atomic too
        params = {name: p for name, p in self.named_parameters()}
        if dtype == "auto":
            exact = all(np.array_equal(a, a.astype(np.float16).astype(a.dtype))
                        for a in (np.asarray(self.F.to_host(p)) for p in params.values()))
            dtype = "fp16" if exact else "fp32"
        tensors = {comp: {} for comp in COMPONENTS}
        for name, p in params.items():
            comp, key = name.split(".", 1)
            tensors[comp][key] = (tuple(p.shape), lambda p=p: np.asarray(self.F.to_host(p)))
        tok = self.tokenizer
        vocab, merges = (None, None) if isinstance(tok, MissingTokenizer) else (tok.vocab, tok.merges)
        source = {"type": "saved", "from": self.source}
        return write_weights(path, tensors, config_dicts(self.config), vocab, merges, self.scheduler_config, source,
                             dtype)


def _held(values, dtype) -> np.ndarray:
    """`values` as a parameter of `dtype`, or float32 when `dtype` is float16 and would round them."""
    if dtype == np.float16:
        half = np.ascontiguousarray(values, dtype=np.float16)
        if np.array_equal(half, values):
            return half
        dtype = np.float32
    return np.ascontiguousarray(values, dtype=dtype)



def _finite(a: np.ndarray, what: str) -> np.ndarray:
    """Nothing made from NaN or infinity is written: refuse it where it first shows."""
    if not np.all(np.isfinite(a)):
        raise NumericsError(f"{what} contain NaN or infinity (inputs at the edge of their ranges, or broken "
                            f"weights); nothing was written")
    return a
