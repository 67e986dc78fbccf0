"""Audio-to-audio: a song becomes spectrogram windows, each is riffed by image-to-image, and the
results are joined into one remixed spectrogram that becomes audio in one pass.

    wave, sr = riff.remix("song.mp3", "jazz piano", strength=0.55, start_s=30, end_s=60)

How (`remix` below):
1. The audio (any rate, any channel count; more than two channels are mixed down to mono) is
   resampled to 44.1 kHz. Its N samples need W = ceil(N / 441) + 1 spectrogram columns; the
   waveform is extended by mirroring its end so the columns tile exactly into windows of
   `window_px` (512) that overlap by `overlap_px` (128); a shorter input is one window of W
   rounded up to 64 px. Nothing is stretched: the tempo is untouched.
2. Spectrogram: each window's mel columns are computed from its own stretch of samples plus a
   margin, which gives the same columns as the whole signal's spectrogram, and made 8-bit with the
   largest amplitude of the whole signal (a first pass), so all windows share one loudness scale.
   Memory: one window at a time, whatever the length.
3. Each window (per channel) is VAE-encoded, noised to the `strength` level and denoised toward the
   prompt (diffusers' img2img schedule; 25 steps and dpmpp2m as the original's audio-to-audio page).
   The noise is a function of position: every 64-px block of the song has its own noise from
   (seed, block), so two overlapping windows start from the same noise over their overlap and
   agree there; the crossfade then mixes two nearly equal images.
4. Join: the windows' spectrograms are crossfaded over each overlap, linearly in mel amplitude
   (`join="spectrogram"`, the default), and the whole remixed spectrogram becomes audio in one
   pass (Griffin-Lim runs across the joins, so the phase is continuous). `join="audio"` instead
   turns every window into audio on its own and crossfades the waveforms (the original's page); its
   phases do not match in the overlaps, so the crossfade can dip in level (up to 3 dB at its middle).
   By the spectral-flux seam measure (`audio.seams`; README: numbers) neither join makes a seam
   and the measured samples did not favour the spectrogram join; it is the default for its one
   continuous-phase pass and the absence of that dip, which the flux measure does not see.
5. Stereo in -> stereo out: both channels are riffed with the *same* noise and text, so the model
   makes the same musical decisions on both and the left/right differences of the song survive as
   the differences of the two input spectrograms (equal channels give equal channels out). Their
   Griffin-Lim starts from one random phase (`link_channels`), so the channels stay in phase instead
   of sounding decorrelated. Mid/side was not chosen: the side signal is not music the model knows
   (riffing it is meaningless) and keeping it unchanged would leave a ghost of the original song.
6. The output has exactly the input's length at 44.1 kHz and goes through the original's loudness
   stage. strength 0 makes no model call: it is the input's own spectrogram round trip.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from minriff import schedulers
from minriff.audio import io as audio_io
from minriff.audio import join as audio_join
from minriff.audio.spectrogram import SpectrogramParams, audio_to_mel, image_to_audio, mel_to_image
from minriff.errors import AudioError, InputError
from minriff.inputs import (
    WIDTH_MULTIPLE,
    check_clip_geometry,
    check_guidance,
    check_prompt,
    check_remix_strength,
    check_scheduler,
    check_steps,
    check_time_range,
)
from minriff.longform import derived_seed
from minriff.progress import Progress, StageProgress
from minriff.rng import Generator

SAMPLE_RATE = 44100
WINDOW_PX = 512
OVERLAP_PX = 128
MIN_SECONDS = 0.1
JOINS = ("spectrogram", "audio")


class _Fixed:
    """A stand-in generator whose randn returns a given array (the VAE's sample noise by position)."""

    def __init__(self, values: np.ndarray):
        self.values = values

    def randn(self, shape):
        assert tuple(shape) == self.values.shape, (shape, self.values.shape)
        return self.values


def load_selection(audio, sample_rate, start_s, end_s) -> tuple[np.ndarray, int]:
    """A file path or a (C, N) / (N,) array -> the [start, end) part as (C, n) float32 and its rate.
    A file is only decoded over the part."""
    if isinstance(audio, (str, Path)):
        frames, sr, _ = audio_io.audio_info(audio)
        start, end = check_time_range(start_s, end_s, frames / sr)
        a, b = int(round(start * sr)), min(frames, int(round(end * sr)))
        return audio_io.read_frames(audio, a, b), sr
    if sample_rate is None or isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or not 1000 <= sample_rate <= 768000:
        raise InputError(f"sample_rate must be an integer from 1000 to 768000 Hz, got {sample_rate!r}")
    wave = np.asarray(audio)
    wave = wave[None] if wave.ndim == 1 else wave
    if wave.ndim != 2 or wave.shape[0] < 1 or wave.shape[1] < 1 or not np.issubdtype(wave.dtype, np.number):
        raise AudioError(f"audio must be a (channels, samples) array of numbers, got shape {np.shape(audio)}")
    if wave.shape[0] > 64:
        raise AudioError(f"audio has {wave.shape[0]} channels; pass (channels, samples), not (samples, channels)")
    if not np.all(np.isfinite(wave)):
        raise AudioError("audio contains NaN or infinite samples")
    start, end = check_time_range(start_s, end_s, wave.shape[1] / sample_rate)
    a, b = int(round(start * sample_rate)), min(wave.shape[1], int(round(end * sample_rate)))
    return np.asarray(wave[:, a:b], dtype=np.float32), int(sample_rate)


def window_starts(n_samples: int, hop: int, window_px: int, overlap_px: int) -> tuple[int, list[int]]:
    """(padded width Wp, window start columns) for a signal of n_samples (module docstring, step 1)."""
    need = math.ceil(n_samples / hop) + 1
    if need <= window_px:
        return math.ceil(need / WIDTH_MULTIPLE) * WIDTH_MULTIPLE, [0]
    step = window_px - overlap_px
    k = math.ceil((need - window_px) / step)
    return window_px + k * step, [i * step for i in range(k + 1)]


def mel_columns(wave: np.ndarray, a: int, b: int, params: SpectrogramParams) -> np.ndarray:
    """Mel columns [a, b) of the whole signal's spectrogram (C, M, b - a), from samples near them only."""
    hop = params.hop_length
    margin = math.ceil(params.n_fft / 2 / hop) + 1  # frames whose windows reach past the cut
    s0 = max(0, (a - margin) * hop)
    s1 = min(wave.shape[1], (b - 1 + margin) * hop + 1)
    mel = audio_to_mel(wave[:, s0:s1], params)
    first = a - s0 // hop
    return mel[:, :, first:first + (b - a)]


def _to_amplitude(pixels: np.ndarray, power: float) -> np.ndarray:
    return np.power((255.0 - pixels.astype(np.float32)) / np.float32(255.0), np.float32(1.0 / power))


def _to_pixels(amplitude: np.ndarray, power: float) -> np.ndarray:
    return np.round(255.0 - 255.0 * np.power(np.clip(amplitude, 0.0, 1.0), power)).astype(np.uint8)


def _position_noise(riff, seed: int, stream: str, a_px: int, width_px: int) -> np.ndarray:
    """(1, 4, 64, width/8) noise whose every 64-px block depends only on (seed, stream, block)."""
    block = riff.latent_shape(WIDTH_MULTIPLE)
    first = a_px // WIDTH_MULTIPLE
    parts = [Generator(derived_seed(seed, stream, j)).randn(block)
             for j in range(first, first + width_px // WIDTH_MULTIPLE)]
    return np.concatenate(parts, axis=3).astype(np.float32)


def _riff_window(riff, rgb, a_px, seed, sched_spec, steps, strength, context, guidance, bar, index,
                 cache=None) -> np.ndarray:
    """img2img of one window's image (512, w, 3) -> the riffed image's R channel (512, w) uint8."""
    w = rgb.shape[1]
    z = riff.encode_image(rgb, _Fixed(_position_noise(riff, seed, "remix-vae", a_px, w)), progress=bar.update)
    noise = _position_noise(riff, seed, "remix-noise", a_px, w)
    sched = riff.make_scheduler(sched_spec, steps)
    timesteps = list(schedulers.img2img_timesteps(sched, steps, strength))
    latents = np.asarray(sched.add_noise(z, noise, timesteps[0]), dtype=np.float32)
    gen = Generator(derived_seed(seed, "remix-steps", index))  # for schedulers that add noise per step
    latents = riff._sample(sched, timesteps, latents, context, guidance, "", generator=gen, bar=bar, cache=cache)
    return riff.decode_latents(latents, progress=bar.update)[:, :, 0]


def _mono_rgb(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(pixels[:, :, None], 3, axis=2))


def _channels_rgb(pixels: np.ndarray) -> np.ndarray:
    """(C, 512, w) uint8 -> the RGB spectrogram image: R=G=B for mono, (0, left, right) for stereo."""
    if pixels.shape[0] == 1:
        return _mono_rgb(pixels[0])
    return np.ascontiguousarray(np.stack([np.zeros_like(pixels[0]), pixels[0], pixels[1]], axis=-1))


def remix(riff, audio, prompt: str, strength: float = 0.55, *, sample_rate: int | None = None,
          start_s: float | None = None, end_s: float | None = None, negative_prompt: str | None = None,
          steps: int = 25, guidance: float = 7.0, seed: int | None = None, scheduler=None,
          window_px: int = WINDOW_PX, overlap_px: int = OVERLAP_PX, join: str = "spectrogram",
          method: str = "nnls", quiet: bool | None = None, cache=None) -> tuple[np.ndarray, int]:
    """`Riffusion.remix` (which documents the arguments) -> (waveform (C, n) float32, 44100).
    `riff` may be None at strength 0 (no model is needed then; the command line loads none).
    quiet: default the pipeline's."""
    strength = check_remix_strength(strength)
    if strength > 0:
        check_prompt(prompt)
        if riff is None:
            raise InputError("a remix at strength > 0 needs a model")
    steps, guidance = check_steps(steps), check_guidance(guidance)
    scheduler = check_scheduler(riff._scheduler_or(scheduler, "dpmpp2m") if riff else scheduler or "dpmpp2m")
    window_px, overlap_px = check_clip_geometry(window_px, overlap_px)
    if join not in JOINS:
        raise InputError(f"join must be one of {', '.join(JOINS)}, got {join!r}")
    if riff is not None:
        seed = riff.last_seed = riff._seed_or_random(seed)
    quiet = (riff is None or riff.quiet) if quiet is None else quiet
    wave, sr = load_selection(audio, sample_rate, start_s, end_s)
    if wave.shape[1] < MIN_SECONDS * sr:
        raise AudioError(f"the audio is {wave.shape[1] / sr:.3f} s long; a remix needs at least {MIN_SECONDS:g} s")
    if wave.shape[0] > 2:
        wave = wave.mean(axis=0, keepdims=True)  # e.g. 5.1: no standard stereo fold-down is assumed
    wave = audio_io.resample(wave, sr, SAMPLE_RATE)
    n = wave.shape[1]
    params = dataclasses.replace(getattr(riff, "spectrogram", None) or SpectrogramParams(), stereo=wave.shape[0] == 2,
                                 sample_rate=SAMPLE_RATE)
    hop, power = params.hop_length, params.power_for_image
    width, starts = window_starts(n, hop, window_px, overlap_px)
    wave = np.pad(wave, ((0, 0), (0, (width - 1) * hop - n)), mode="reflect")  # mirrored tail, cropped later
    win = min(window_px, width)
    top = max(float(mel.max()) for mel in (mel_columns(wave, a, min(a + 1024, width), params)
                                           for a in range(0, width, 1024)))
    channels = wave.shape[0]
    context = None
    if strength > 0:
        context = riff._context(riff.encode_prompt(prompt), lambda: riff.encode_prompt(negative_prompt or ""),
                                guidance)
        probe = riff.make_scheduler(scheduler, steps)
        n_steps = len(schedulers.img2img_timesteps(probe, steps, strength))
        total = len(starts) * channels * (n_steps + 2 * riff.vae.stages)
    else:
        total = len(starts)
    bar = Progress(total, f"remix window 1/{len(starts)}", quiet)
    out = np.zeros((channels, params.num_frequencies, width), np.uint8)  # (C, 512, Wp) the joined spectrogram
    pieces = []  # join="audio": (start sample, wave)
    for i, a in enumerate(starts):
        bar.label = f"remix window {i + 1}/{len(starts)}"
        mel = mel_columns(wave, a, a + win, params)
        pixels = np.stack([np.asarray(mel_to_image(mel[c:c + 1], power, top)[0])[:, :, 0] for c in range(channels)])
        if strength > 0:
            pixels = np.stack([_riff_window(riff, _mono_rgb(pixels[c]), a, seed, scheduler, steps, strength,
                                            context, guidance, bar, i, cache) for c in range(channels)])
        else:
            bar.update()
        if join == "audio":
            piece = image_to_audio(_channels_rgb(pixels), params, method=method, loudness=None,
                                   progress=StageProgress(True), link_channels=True)
            pieces.append((a * hop, piece))
            continue
        lap = overlap_px if i else 0
        if lap:
            ramp = ((np.arange(lap) + 0.5) / lap).astype(np.float32)
            prev, new = _to_amplitude(out[:, :, a:a + lap], power), _to_amplitude(pixels[:, :, :lap], power)
            out[:, :, a:a + lap] = _to_pixels(prev + ramp * (new - prev), power)
        out[:, :, a + lap:a + win] = pixels[:, :, lap:]
    bar.close()
    if join == "audio":
        raw = audio_join.crossfade(pieces, (width - 1) * hop)
    else:
        raw = image_to_audio(_channels_rgb(out), params, method=method, loudness=None,
                             progress=StageProgress(quiet), link_channels=True)
    return audio_io.loudness_riffusion(raw[:, :n]), SAMPLE_RATE
