"""Riffusion's spectrogram <-> image <-> audio conversion (reference/riffusion.md §1).

audio (C, N) -> |STFT| -> mel (C, 512, T) -> 8-bit image (flipped, inverted, power 0.25) with EXIF
parameters; and back: image -> mel -> inverse mel (exact NNLS or the original's SGD) -> Griffin-Lim
(momentum 0.99) -> loudness stage. The heavy parts live in stft.py, melscale.py, invmel.py and
griffinlim.py; this module holds the parameters and the image mapping."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from minriff import atomic
from minriff.audio.melscale import BandedFilterbank, melscale_fbanks
from minriff.audio.stft import STFT
from minriff.errors import AudioError, InputError
from minriff.rng import Generator

# EXIF tag numbers of the original (SpectrogramParams.ExifTags)
EXIF_TAGS = {
    "sample_rate": 11000, "stereo": 11005, "step_size_ms": 11010, "window_duration_ms": 11020,
    "padded_duration_ms": 11030, "num_frequencies": 11040, "min_frequency": 11050,
    "max_frequency": 11060, "power_for_image": 11070,
}
EXIF_MAX_VALUE = 11080
DEFAULT_MAX_VALUE = 30e6  # image -> mel scale of the original ("shouldn't matter")
INT16_SCALE = 32768.0  # waveforms are float in [-1, 1]; the original analysed raw int16 values


@dataclass(frozen=True)
class SpectrogramParams:
    """The original's parameters and defaults. Sizes derive by truncation: int(ms / 1000 * sr)."""

    stereo: bool = False
    sample_rate: int = 44100
    step_size_ms: int = 10
    window_duration_ms: int = 100
    padded_duration_ms: int = 400
    num_frequencies: int = 512
    min_frequency: int = 0
    max_frequency: int = 10000
    mel_scale_norm: str | None = None
    mel_scale_type: str = "htk"
    max_mel_iters: int = 200
    num_griffin_lim_iters: int = 32
    power_for_image: float = 0.25

    @classmethod
    def riffusion_20k(cls, **overrides) -> SpectrogramParams:
        """The playground's "Use 20kHz" variant: 10 Hz - 20 kHz, stereo."""
        return cls(**{"min_frequency": 10, "max_frequency": 20000, "stereo": True, **overrides})

    @property
    def n_fft(self) -> int:
        return int(self.padded_duration_ms / 1000.0 * self.sample_rate)

    @property
    def win_length(self) -> int:
        return int(self.window_duration_ms / 1000.0 * self.sample_rate)

    @property
    def hop_length(self) -> int:
        return int(self.step_size_ms / 1000.0 * self.sample_rate)

    @property
    def n_channels(self) -> int:
        return 2 if self.stereo else 1

    def validate(self) -> SpectrogramParams:
        if self.sample_rate <= 0 or self.hop_length < 1 or self.win_length < 2 or self.n_fft < self.win_length:
            raise InputError(f"bad spectrogram sizes: sr={self.sample_rate}, hop={self.hop_length}, "
                             f"window={self.win_length}, n_fft={self.n_fft}")
        if not (0 <= self.min_frequency < self.max_frequency <= self.sample_rate / 2):
            raise InputError(f"bad frequency range {self.min_frequency}-{self.max_frequency} Hz "
                             f"at {self.sample_rate} Hz")
        if self.power_for_image <= 0 or self.num_frequencies < 1:
            raise InputError("power_for_image and num_frequencies must be positive")
        return self

    def to_exif(self) -> dict[int, int | float]:
        return {tag: (float(v) if isinstance(v, float) else int(v))
                for name, tag in EXIF_TAGS.items() for v in [getattr(self, name)]}

    @classmethod
    def from_exif(cls, exif) -> SpectrogramParams:
        """Parameters from EXIF tags; fields whose tags are absent keep their defaults."""
        kw = {}
        for f in dataclasses.fields(cls):
            tag = EXIF_TAGS.get(f.name)
            if tag is not None and tag in exif:
                v = exif[tag]
                kw[f.name] = bool(v) if f.name == "stereo" else float(v) if f.name == "power_for_image" else int(v)
        return cls(**kw)


def plan(p: SpectrogramParams) -> tuple[STFT, np.ndarray, BandedFilterbank]:
    """(STFT plan, dense mel filterbank, banded filterbank) of these parameters (cached)."""
    return _plan(p)


@lru_cache(maxsize=8)
def _plan(p: SpectrogramParams) -> tuple[STFT, np.ndarray, BandedFilterbank]:
    p.validate()
    fb = melscale_fbanks(p.n_fft // 2 + 1, p.min_frequency, p.max_frequency, p.num_frequencies,
                         p.sample_rate, p.mel_scale_norm, p.mel_scale_type)
    return STFT(p.n_fft, p.hop_length, p.win_length), fb, BandedFilterbank.from_dense(fb)


def filterbank(p: SpectrogramParams) -> np.ndarray:
    """(n_fft//2+1, num_frequencies) float64 mel filterbank of these parameters."""
    return _plan(p)[1]


def n_frames(n_samples: int, p: SpectrogramParams = SpectrogramParams()) -> int:
    return 1 + n_samples // p.hop_length


def _as_channels(waveform: np.ndarray, p: SpectrogramParams) -> np.ndarray:
    """(C, N) or (N,) -> the channel count the parameters ask for, as the original did:
    mono from stereo keeps channel 0 (what the original's golden image shows), stereo from mono
    duplicates the channel."""
    w = np.asarray(waveform)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[0] < 1:
        raise AudioError(f"waveform must be (channels, samples), got shape {np.shape(waveform)}")
    if w.shape[0] > 2:
        raise AudioError(f"{w.shape[0]}-channel audio is not supported (mono or stereo only)")
    if p.stereo and w.shape[0] == 1:
        w = np.concatenate([w, w])
    elif not p.stereo and w.shape[0] == 2:
        w = w[:1]
    return w


def audio_to_mel(waveform: np.ndarray, params: SpectrogramParams | None = None) -> np.ndarray:
    """waveform (C, N) float in [-1, 1] -> mel amplitudes (C, num_frequencies, T) float64, in the
    original's units (int16-scale samples, |STFT| power 1, mel = fb.T @ |X|)."""
    p = params or SpectrogramParams()
    plan, fb, banded = _plan(p)
    w = _as_channels(waveform, p)
    if not np.all(np.isfinite(w)):
        raise AudioError("waveform contains NaN or infinite samples")
    used = banded.used_bins
    x = w.astype(np.float32) * np.float32(INT16_SCALE)
    mel = np.empty((w.shape[0], p.num_frequencies, plan.n_frames(w.shape[1])))
    for t0, X in plan.frame_blocks(x):  # X (C, t, F)
        mag = np.abs(X[..., :used]).astype(np.float64)
        mel[:, :, t0 : t0 + X.shape[1]] = (mag @ fb[:used]).transpose(0, 2, 1)
    return mel


def mel_to_image(mel: np.ndarray, power: float = 0.25) -> tuple[Image.Image, float]:
    """mel (C, M, T), C in {1, 2} -> (RGB image M x T, max value). Loud = dark; row 0 = top bin."""
    if mel.ndim != 3 or mel.shape[0] not in (1, 2):
        raise InputError(f"mel must be (1 or 2, mels, frames), got {mel.shape}")
    max_value = float(np.max(mel))
    x = mel / max_value if max_value > 0 else np.zeros_like(mel)
    data = (255.0 - 255.0 * np.power(x, power)).astype(np.uint8)  # truncation, as the original
    data = data[:, ::-1, :]  # flip: high frequencies on top
    if data.shape[0] == 1:
        rgb = np.repeat(data[0][..., None], 3, axis=-1)
    else:
        rgb = np.stack([np.zeros_like(data[0]), data[0], data[1]], axis=-1)
    return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB"), max_value


def audio_to_image(waveform: np.ndarray, params: SpectrogramParams | None = None) -> Image.Image:
    """waveform (C, N) float in [-1, 1] at params.sample_rate -> spectrogram image with the
    parameters (and MAX_VALUE) in its EXIF; save it as PNG with `save_image` to keep them."""
    p = params or SpectrogramParams()
    mel = audio_to_mel(waveform, p)
    image, max_value = mel_to_image(mel, p.power_for_image)
    exif = image.getexif()
    exif.update(p.to_exif())
    exif[EXIF_MAX_VALUE] = max_value
    return image


def image_format(path, format: str | None = None) -> str:  # noqa: A002 (PIL's name)
    """PIL's format name for `path` (from its suffix unless given): "PNG", "JPEG", ..."""
    if format:
        return format.upper()
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise AudioError(f"cannot write image {path}: unknown image format {suffix or '(no suffix)'}; "
                         "use .png (keeps the EXIF parameters) or .jpg")
    return fmt


def save_image(image: Image.Image, path, format: str | None = None) -> None:  # noqa: A002 (PIL's name)
    """Write the image (with its EXIF) atomically through minriff.atomic; format from the suffix."""
    fmt = image_format(path, format)
    try:
        with atomic.atomic_write(path) as f:
            image.save(f, format=fmt, exif=image.getexif())
    except (OSError, ValueError, KeyError) as e:  # PIL's own refusals (a mode the format cannot hold, ...)
        raise AudioError(f"cannot write image {path}: {e}") from e


def params_from_image(image: Image.Image, default: SpectrogramParams | None = None) -> SpectrogramParams:
    """EXIF parameters when the image carries them; otherwise `default` (or the defaults), with
    stereo guessed from the pixels (R = 0 everywhere while G/B are not)."""
    exif = image.getexif()
    if any(tag in exif for tag in EXIF_TAGS.values()):
        return SpectrogramParams.from_exif(exif)
    p = default or SpectrogramParams()
    if default is None and image.mode == "RGB":
        rgb = np.asarray(image)
        if not rgb[..., 0].any() and rgb[..., 1:].any():
            p = dataclasses.replace(p, stereo=True)
    return p


def image_to_mel(image: Image.Image, params: SpectrogramParams | None = None,
                 max_value: float = DEFAULT_MAX_VALUE) -> np.ndarray:
    """Spectrogram image -> mel amplitudes (C, H, W) float32: R channel for mono, G/B for stereo."""
    p = params or params_from_image(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    data = np.asarray(image)[::-1].transpose(2, 0, 1)  # (3, H, W), row 0 = lowest bin
    data = data[1:3] if p.stereo else data[0:1]
    x = (255.0 - data.astype(np.float32)) / np.float32(255.0)
    return (np.power(x, np.float32(1.0 / p.power_for_image)) * np.float32(max_value)).astype(np.float32)


def image_to_audio(image: Image.Image, params: SpectrogramParams | None = None, method: str = "nnls",
                   seed: int = 0, n_iter: int | None = None, loudness: str | None = "riffusion",
                   phase: str = "random", progress=None, length: int | None = None) -> np.ndarray:
    """Spectrogram image -> waveform (C, (W-1)*hop) float32 in [-1, 1] (`length` samples if given:
    W*hop makes every column last one hop, 512 px -> 5.12 s, the length the server's clips have).

    method: "nnls" (exact non-negative least squares, default) or "sgd" (the original's 200-step
    SGD). n_iter: Griffin-Lim iterations (default params.num_griffin_lim_iters = 32).
    loudness: "riffusion" (the original's post-processing, §1.8), "peak" (peak to -0.1 dBFS) or None
    (raw Griffin-Lim output). phase: Griffin-Lim start, "random" (the original) or "peaks"
    (peak-locked phase-vocoder start: better spectral convergence at equal iterations).
    progress: optional callable(stage: str, done: int, total: int)."""
    from minriff.audio import io as audio_mod
    from minriff.audio.griffinlim import griffin_lim
    from minriff.audio.invmel import inverse_mel

    if not isinstance(image, Image.Image):
        raise InputError(f"expected a PIL image, got {type(image).__name__}")
    if loudness not in ("riffusion", "peak", None):
        raise InputError(f"loudness must be 'riffusion', 'peak' or None, got {loudness!r}")
    p = params or params_from_image(image)
    if image.height != p.num_frequencies:
        raise AudioError(f"image height {image.height} does not match num_frequencies {p.num_frequencies}")
    plan, fb, banded = _plan(p)
    min_width = 2 + max(-plan.offset, plan.win + plan.offset) // p.hop_length  # reflect padding must fit
    if image.width < min_width:
        raise AudioError(f"image is {image.width} px wide; at least {min_width} frames are needed")
    mel = image_to_mel(image, p)
    # torch's CPU generator stream: with torch.manual_seed(seed) the original draws the SGD init and
    # then the Griffin-Lim phases from the same global generator, in this order
    rng = Generator(seed)
    mag = inverse_mel(mel, banded, method=method, rng=rng, max_iter=p.max_mel_iters, progress=progress)
    wave = griffin_lim(mag, plan, n_iter=p.num_griffin_lim_iters if n_iter is None else n_iter,
                       rng=rng, phase_init=phase, progress=progress, length=length)
    if loudness == "riffusion":
        return audio_mod.loudness_riffusion(wave)
    return audio_mod.peak_normalize(wave) if loudness == "peak" else wave
