"""`Riffusion`: text -> spectrogram image -> audio, on minriff's own models and kernels.

    from minriff import Riffusion
    riff = Riffusion.load()                       # newest weights in $MINRIFF_WEIGHTS or ./weights/
    wave, sr = riff.generate_audio("jazz piano solo", seed=42)

Three ways to make a spectrogram:
- `generate_spectrogram`: text-to-image (optionally image-to-image with `init_image`), diffusers'
  StableDiffusion(Img2Img)Pipeline semantics, classifier-free guidance with the negative prompt;
- `interpolate_styles`: between two prompts/seeds (lerp of text states, slerp of noises);
- `riffuse`: one request of the original Riffusion server (reference/riffusion.md §2.3-2.5).

All three take `callback=fn`: `fn(step_index, total_steps, timestep, latents)` runs after every
denoising step (index 0 .. total_steps - 1; total_steps is the number of steps actually run, fewer
than `steps` for image-to-image); `latents` (1, 4, 64, W/8) is a read-only view, so copy it to keep
it (`latents.copy()`). The return value is ignored; an exception raised in it stops the run.

Image geometry: height is always 512 px (the mel bins); width follows the duration at 10 ms per
pixel, rounded *up* to a multiple of 64 px (`image_width`): 5 s -> 512 px, which converts to
(512 - 1) * 10 ms = 5.11 s of audio. 64 px = 8 latent columns is what the Stable Diffusion v1 UNet
needs (three 2x downsamplings of the latent). Durations are capped at MAX_SECONDS (see there).
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import kernels
from .errors import InputError, WeightsError
from .latents import as_rgb_array, image_to_model, lerp, mask_to_latent, model_to_image, slerp

HEIGHT = 512
MS_PER_PIXEL = 10
WIDTH_MULTIPLE = 64
# Self-attention at the finest latent level costs width^2: a 30 s clip (3008 px, 24,064 latent
# positions) already spends ~35x the attention work of a 5 s clip per step (minutes per step on a
# laptop CPU at full size), and the model was trained on 512-px images. Longer music: `interpolate`
# or several clips.
MAX_SECONDS = 30.0
SCHEDULERS = ("pndm", "ddim", "dpmpp2m", "euler", "euler_a", "lms")
WEIGHTS_ENV = "MINRIFF_WEIGHTS"
SAMPLE_RATE = 44100  # Riffusion's SpectrogramParams
AUDIO_CHUNK_PX = 4096
AUDIO_OVERLAP_PX = 64

HOW_TO_GET_WEIGHTS = (
    "get weights with `minriff download` (the real Riffusion model, needs internet), "
    "`minriff convert CHECKPOINT -o weights/riffusion.safetensors` (a checkpoint you have), or "
    "`minriff init-random --config tiny -o weights/tiny.safetensors` (a random test model: it runs, "
    "but makes noise)"
)


def find_weights(path=None) -> Path:
    """A converted weights file: `path` (file, or folder -> newest *.safetensors in it), else the newest
    in $MINRIFF_WEIGHTS (file or folder), else in ./weights/."""
    if path is not None:
        p = Path(path)
        if p.is_dir():
            return _newest(p) or _no_weights(f"no *.safetensors file in {p}")
        if p.is_file():
            return p
        raise WeightsError(f"weights file not found: {p}; {HOW_TO_GET_WEIGHTS}")
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        p = Path(env)
        if p.is_file():
            return p
        if p.is_dir() and _newest(p):
            return _newest(p)
    found = _newest(Path("weights"))
    if found:
        return found
    where = f"${WEIGHTS_ENV} ({env}) or ./weights/" if env else "./weights/ (or $MINRIFF_WEIGHTS)"
    _no_weights(f"no converted weights found in {where}")


def _newest(folder: Path):
    files = sorted(folder.glob("*.safetensors"), key=lambda f: f.stat().st_mtime) if folder.is_dir() else []
    return files[-1] if files else None


def _no_weights(msg):
    raise WeightsError(f"{msg}; {HOW_TO_GET_WEIGHTS}")


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


def check_common(steps, guidance, scheduler) -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or guidance < 0:
        raise InputError(f"guidance must be a number >= 0, got {guidance!r}")
    if scheduler not in SCHEDULERS:
        raise InputError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")


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


class Progress:
    """A one-line text progress bar on stderr (no dependency); silent when quiet."""

    def __init__(self, total: int, label: str, quiet: bool = False, stream=None):
        self.total, self.label, self.quiet = total, label, quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.done = 0
        self._draw()

    def _draw(self, end=""):
        if self.quiet or (not end and not self.tty):  # logs and pipes get the finished line only
            return
        width = 24
        filled = width * self.done // max(self.total, 1)
        secs = time.perf_counter() - self.start
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {secs:.1f}s{end}")
        self.stream.flush()

    def update(self, n: int = 1):
        self.done += n
        self._draw("\n" if self.done >= self.total else "")


class Riffusion:
    """The loaded models plus the sampling loops. Build with `Riffusion.load(...)`."""

    def __init__(self, models: dict, backend: str = "cpu", quiet: bool = False, source: str = ""):
        kernels.backend(backend)
        self.F = kernels.ops(backend)
        self.backend = backend
        self.text_encoder = models["text_encoder"]
        self.unet = models["unet"]
        self.vae = models["vae"]
        self.tokenizer = models["tokenizer"]
        self.scheduler_config = dict(models.get("scheduler_config") or {})
        self.config = models["config"]
        self.quiet = quiet
        self.source = source
        if backend == "cuda":
            for m in (self.text_encoder, self.unet, self.vae):
                m.apply_to_parameters(self.F.asarray)
        self._text_cache: dict[str, np.ndarray] = {}

    @classmethod
    def load(cls, path=None, backend: str = "cpu", quiet: bool = False, dtype=np.float32) -> "Riffusion":
        from . import weights

        if backend not in kernels.BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(kernels.BACKENDS)}")
        file = find_weights(path)
        return cls(weights.load_models(file, dtype=dtype), backend=backend, quiet=quiet, source=str(file))

    # ---- geometry -------------------------------------------------------------------------------
    @property
    def latent_downscale(self) -> int:
        return self.config.vae.downscale

    def latent_shape(self, width: int) -> tuple:
        f = self.latent_downscale
        return (1, self.config.unet.in_channels, HEIGHT // f, width // f)

    def check_image(self, image, what="seed image") -> np.ndarray:
        """(512, W, 3) uint8 of a seed/init/mask image. Height must be 512 (the mel bins); a width
        that is not a multiple of 64 px is stretched (bicubic) to the next multiple, as the
        original's audio-to-audio page did; `fit_width` stretches results back."""
        rgb = as_rgb_array(image)
        h, w = rgb.shape[:2]
        if h != HEIGHT or w < 2:
            raise InputError(
                f"{what} is {w}x{h} px; it must be {HEIGHT} px high (a Riffusion spectrogram, e.g. from "
                f"`minriff audio2image`) and at least 2 px wide")
        return fit_width(rgb, math.ceil(w / WIDTH_MULTIPLE) * WIDTH_MULTIPLE)

    # ---- text -----------------------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> np.ndarray:
        """(1, 77, C) text states of a prompt with the original's (word:1.5) weighting syntax; cached."""
        if prompt not in self._text_cache:
            from . import prompt_weighting

            states = prompt_weighting.weighted_embeddings(self.tokenizer, self._run_text_encoder, prompt)
            self._text_cache[prompt] = np.asarray(states, dtype=np.float32)
        return self._text_cache[prompt]

    def _run_text_encoder(self, ids: np.ndarray) -> np.ndarray:
        self._ops()
        return np.asarray(self.F.to_host(self.text_encoder(self.F.asarray(ids))), dtype=np.float32)

    # ---- models ---------------------------------------------------------------------------------
    def _ops(self):
        """This pipeline's kernels, also made the current backend: model code calls kernels.ops(),
        and another Riffusion object may have chosen a different backend since."""
        kernels.backend(self.backend)
        return self.F

    def encode_image(self, rgb: np.ndarray, generator) -> np.ndarray:
        """(H, W, 3) uint8 -> scaled latents z * scaling_factor, sampled with `generator`."""
        F = self._ops()
        mean, logvar = self.vae.encode(F.asarray(image_to_model(rgb)))
        mean, logvar = F.to_host(mean), F.to_host(logvar)
        eps = generator.randn(mean.shape)
        z = F.to_host(self.vae.sample(F.asarray(mean), F.asarray(logvar), F.asarray(eps)))
        return np.asarray(z, dtype=np.float32) * np.float32(self.config.vae.scaling_factor)

    def decode_latents(self, latents: np.ndarray) -> np.ndarray:
        z = latents / np.float32(self.config.vae.scaling_factor)
        self._ops()
        return model_to_image(self.F.to_host(self.vae.decode(self.F.asarray(z.astype(np.float32)))))

    def _eps(self, x: np.ndarray, t, context, guidance: float) -> np.ndarray:
        """Noise prediction with classifier-free guidance (batch [uncond, cond]) when guidance > 1."""
        F = self._ops()
        cfg = guidance > 1.0
        x_in = np.concatenate([x, x]) if cfg else x
        eps = np.asarray(F.to_host(self.unet(F.asarray(x_in), t, context)), dtype=np.float32)
        if not cfg:
            return eps
        uncond, cond = eps[:1], eps[1:]
        return uncond + np.float32(guidance) * (cond - uncond)

    def _context(self, cond: np.ndarray, uncond: np.ndarray, guidance: float):
        both = np.concatenate([uncond, cond]) if guidance > 1.0 else cond
        return self.F.asarray(both.astype(np.float32))

    def _denoise(self, sched, timesteps, latents, context, guidance, label, after_step=None, generator=None,
                 callback=None):
        bar = Progress(len(timesteps), label, self.quiet)
        for i, t in enumerate(timesteps):
            x_in = sched.scale_model_input(latents, t)
            eps = self._eps(np.asarray(x_in, dtype=np.float32), t, context, guidance)
            latents = np.asarray(sched.step(eps, t, latents, generator=generator), dtype=np.float32)
            if after_step is not None:
                latents = after_step(latents, t)
            if callback is not None:
                seen = latents.view()
                seen.flags.writeable = False  # the callback may look, not change the run
                callback(i, len(timesteps), t.item() if hasattr(t, "item") else t, seen)
            bar.update()
        return latents

    def make_scheduler(self, name: str, steps: int):
        from . import schedulers

        sched = schedulers.make(name, self.scheduler_config)
        sched.set_timesteps(int(steps))
        return sched

    # ---- text -> spectrogram --------------------------------------------------------------------
    def generate_spectrogram(self, prompt: str, negative_prompt: str | None = None, duration_s: float = 5.0,
                             steps: int = 30, guidance: float = 7.0, seed: int | None = None,
                             scheduler: str = "dpmpp2m", init_image=None, strength: float = 0.75,
                             callback=None) -> np.ndarray:
        """Text -> (512, W, 3) uint8 spectrogram. With `init_image` (a 512-px-high spectrogram) this is
        image-to-image at `strength` (diffusers' img2img schedule) and the width is the image's.
        `callback(step_index, total_steps, timestep, latents)` after each step (module docstring).
        The seed used is kept in `self.last_seed`."""
        check_prompt(prompt)
        check_common(steps, guidance, scheduler)
        check_callback(callback)
        from . import schedulers
        from .rng import Generator

        seed = random_seed() if seed is None else int(seed)
        self.last_seed = seed
        gen = Generator(seed)
        cond = self.encode_prompt(prompt)
        uncond = self.encode_prompt(negative_prompt or "")
        context = self._context(cond, uncond, guidance)
        sched = self.make_scheduler(scheduler, steps)
        if init_image is None:
            shape = self.latent_shape(image_width(duration_s))
            latents = gen.randn(shape) * np.float32(sched.init_noise_sigma)
            timesteps = list(sched.timesteps)
        else:
            strength = check_strength(strength)
            width = as_rgb_array(init_image).shape[1]
            z = self.encode_image(self.check_image(init_image, "init image"), gen)
            timesteps = list(schedulers.img2img_timesteps(sched, steps, strength))
            noise = gen.randn(z.shape)
            latents = np.asarray(sched.add_noise(z, noise, timesteps[0]), dtype=np.float32)
        latents = self._denoise(sched, timesteps, latents.astype(np.float32), context, guidance,
                                "denoising", generator=gen, callback=callback)
        image = self.decode_latents(latents)
        return image if init_image is None else fit_width(image, width)

    def interpolate_styles(self, prompt_a: str, prompt_b: str, alpha: float, seed_a: int = 42,
                           seed_b: int | None = None, negative_prompt: str | None = None,
                           duration_s: float = 5.0, steps: int = 30, guidance: float = 7.0,
                           scheduler: str | None = None, seed_image=None, denoising: float = 0.75,
                           callback=None) -> np.ndarray:
        """A spectrogram between two prompts: text states lerped, the two seeds' noises slerped, at
        `alpha` (0 = A, 1 = B). With `seed_image` it is exactly `riffuse` (img2img at `denoising`).
        scheduler: default dpmpp2m from noise, pndm (the original's) with a seed image.
        `callback(step_index, total_steps, timestep, latents)` after each step (module docstring)."""
        scheduler = scheduler or ("pndm" if seed_image is not None else "dpmpp2m")
        from .riffuse import PromptInput

        alpha = check_alpha(alpha)
        check_callback(callback)
        seed_b = seed_a if seed_b is None else seed_b
        if seed_image is not None:
            a = PromptInput(prompt_a, int(seed_a), negative_prompt, denoising, guidance)
            b = PromptInput(prompt_b, int(seed_b), negative_prompt, denoising, guidance)
            return self.riffuse(a, b, alpha, seed_image, steps=steps, scheduler=scheduler, callback=callback)
        check_prompt(prompt_a, "prompt A")
        check_prompt(prompt_b, "prompt B")
        check_common(steps, guidance, scheduler)
        from .rng import Generator

        shape = self.latent_shape(image_width(duration_s))
        gen = Generator(int(seed_a))
        noise = slerp(alpha, gen.randn(shape), Generator(int(seed_b)).randn(shape))
        cond = lerp(self.encode_prompt(prompt_a), self.encode_prompt(prompt_b), np.float32(alpha))
        context = self._context(cond, self.encode_prompt(negative_prompt or ""), guidance)
        sched = self.make_scheduler(scheduler, steps)
        latents = noise * np.float32(sched.init_noise_sigma)
        latents = self._denoise(sched, list(sched.timesteps), latents, context, guidance, "denoising", generator=gen,
                                callback=callback)
        return self.decode_latents(latents)

    def riffuse(self, start, end, alpha: float, seed_image, mask=None, steps: int = 50,
                scheduler: str = "pndm", callback=None) -> np.ndarray:
        """One request of the original Riffusion server (reference/riffusion.md §2.3-2.5).

        start/end: `riffuse.PromptInput` or dicts with its fields. Text states, guidance and denoising
        are lerped at `alpha`, the start/end seeds' noises slerped; the seed image is encoded (VAE
        sample drawn from a fresh generator seeded with start.seed), noised to the original's start
        timestep and denoised; a mask (black keeps the seed, white regenerates) blends latents after
        every step. Negative prompts, which the original ignored, are honoured (lerped too).
        With a scheduler other than pndm the noise level and steps follow diffusers' img2img instead.
        `callback(step_index, total_steps, timestep, latents)` after each step (module docstring; with
        a mask it sees the blended latents)."""
        from . import schedulers
        from .riffuse import PromptInput
        from .rng import Generator

        start = start if isinstance(start, PromptInput) else PromptInput.from_dict(start, "start")
        end = end if isinstance(end, PromptInput) else PromptInput.from_dict(end, "end")
        alpha = check_alpha(alpha)
        check_callback(callback)
        for p, name in ((start, "start"), (end, "end")):
            check_prompt(p.prompt, f"{name} prompt")
            check_common(steps, p.guidance, scheduler)
            check_strength(p.denoising, f"{name} denoising")
        guidance = float(lerp(start.guidance, end.guidance, alpha))
        strength = float(lerp(start.denoising, end.denoising, alpha))
        width = as_rgb_array(seed_image).shape[1]
        rgb = self.check_image(seed_image)
        keep = None
        if mask is not None:
            mask_rgb = as_rgb_array(mask)
            if mask_rgb.shape[:2] != (HEIGHT, width):
                raise InputError(f"mask image is {mask_rgb.shape[1]}x{mask_rgb.shape[0]} px but the seed image is "
                                 f"{width}x{HEIGHT} px; they must match")
            mask_rgb = fit_width(mask_rgb, rgb.shape[1], nearest=True)
            keep = mask_to_latent(mask_rgb, self.latent_downscale, self.config.unet.in_channels)

        cond = lerp(self.encode_prompt(start.prompt), self.encode_prompt(end.prompt), np.float32(alpha))
        uncond = lerp(self.encode_prompt(start.negative_prompt or ""),
                      self.encode_prompt(end.negative_prompt or ""), np.float32(alpha))
        context = self._context(cond, uncond, guidance)
        z = self.encode_image(rgb, Generator(start.seed))
        sched = self.make_scheduler(scheduler, steps)
        if scheduler == "pndm":
            t0, timesteps = schedulers.riffusion_img2img_schedule(sched, steps, strength)
        else:  # the original schedule indexes PNDM's n+1 timesteps; others get diffusers' img2img one
            timesteps = schedulers.img2img_timesteps(sched, steps, strength)
            t0 = timesteps[0]
        timesteps = list(timesteps)
        gen_a = Generator(start.seed)
        noise = slerp(alpha, gen_a.randn(z.shape), Generator(end.seed).randn(z.shape))
        latents = np.asarray(sched.add_noise(z, noise, t0), dtype=np.float32)

        def blend(x, t):
            kept = np.asarray(sched.add_noise(z, noise, t), dtype=np.float32)
            return kept * keep + x * (1.0 - keep)

        latents = self._denoise(sched, timesteps, latents, context, guidance, "riffusing",
                                after_step=blend if keep is not None else None, generator=gen_a, callback=callback)
        return fit_width(self.decode_latents(latents), width)

    # ---- spectrogram <-> audio ------------------------------------------------------------------
    def spectrogram_to_audio(self, image, method: str = "nnls", seed: int = 0) -> np.ndarray:
        """Spectrogram image -> waveform (C, (W - 1) * 441) float32 at 44.1 kHz (`minriff.spectrogram`,
        then the original's loudness stage on the whole), with a progress bar per conversion stage.
        Images wider than AUDIO_CHUNK_PX are converted in overlapping pieces crossfaded over
        AUDIO_OVERLAP_PX (memory grows with width: ~1.9 GB peak at 4096 px)."""
        from PIL import Image

        from . import audio, spectrogram

        bars: dict[str, Progress] = {}

        def progress(stage: str, done: int, total: int):
            bar = bars.get(stage) or bars.setdefault(stage, Progress(total, f"{stage:<18}", self.quiet))
            if done > bar.done:
                bar.update(min(done, total) - bar.done)

        rgb = as_rgb_array(image)
        hop = spectrogram.SpectrogramParams().hop_length
        pieces = []
        for a, b in audio_chunks(rgb.shape[1]):
            bars.clear()
            wave = spectrogram.image_to_audio(Image.fromarray(rgb[:, a:b]), method=method, seed=seed,
                                              loudness=None, progress=progress)
            pieces.append((a * hop, wave))
        return audio.loudness_riffusion(crossfade(pieces, (rgb.shape[1] - 1) * hop))

    def audio_to_spectrogram(self, waveform: np.ndarray, sample_rate: int = 44100) -> np.ndarray:
        """Waveform (C, N) -> (512, W, 3) uint8 spectrogram with Riffusion's parameters."""
        from . import spectrogram

        params = spectrogram.SpectrogramParams()
        if sample_rate != params.sample_rate:
            raise InputError(f"audio must be at {params.sample_rate} Hz, got {sample_rate} Hz "
                             "(`minriff.audio.read_audio` resamples files)")
        wave = np.atleast_2d(np.asarray(waveform, dtype=np.float32))
        return as_rgb_array(spectrogram.audio_to_image(wave, params))

    def generate_audio(self, prompt: str, method: str = "nnls", **kwargs) -> tuple[np.ndarray, int]:
        """Text -> (waveform (C, N) float32, sample_rate). kwargs as for `generate_spectrogram`."""
        image = self.generate_spectrogram(prompt, **kwargs)
        self.last_image = image
        return self.spectrogram_to_audio(image, method=method), SAMPLE_RATE


def audio_chunks(width: int) -> list[tuple[int, int]]:
    """Pixel ranges [a, b) covering `width`, each at most AUDIO_CHUNK_PX wide, neighbours sharing
    AUDIO_OVERLAP_PX columns."""
    if width <= AUDIO_CHUNK_PX:
        return [(0, width)]
    step = AUDIO_CHUNK_PX - AUDIO_OVERLAP_PX
    starts = list(range(0, width - AUDIO_OVERLAP_PX, step))
    return [(a, min(a + AUDIO_CHUNK_PX, width)) for a in starts]


def crossfade(pieces: list, length: int) -> np.ndarray:
    """Place (start_sample, wave (C, n)) pieces on one timeline; where two overlap, fade linearly
    from the earlier to the later one."""
    channels = pieces[0][1].shape[0]
    out = np.zeros((channels, length), np.float32)
    end_prev = 0
    for start, wave in pieces:
        n = min(wave.shape[1], length - start)
        wave = wave[:, :n]
        overlap = max(0, min(end_prev - start, n))
        if overlap:
            ramp = np.linspace(0.0, 1.0, overlap, dtype=np.float32)
            out[:, start:start + overlap] = out[:, start:start + overlap] * (1 - ramp) + wave[:, :overlap] * ramp
        out[:, start + overlap:start + n] = wave[:, overlap:]
        end_prev = start + n
    return out


def fit_width(rgb: np.ndarray, width: int, nearest: bool = False) -> np.ndarray:
    """Stretch (H, W, 3) uint8 to `width` columns (bicubic, or nearest for masks); no-op if equal."""
    if rgb.shape[1] == width:
        return rgb
    from PIL import Image

    resample = Image.NEAREST if nearest else Image.BICUBIC
    return np.asarray(Image.fromarray(rgb).resize((width, rgb.shape[0]), resample=resample))

