"""Riffusion's spectrogram <-> image <-> audio conversion (reference/riffusion.md §1).

audio (C, N) -> |STFT| -> mel (C, 512, T) -> 8-bit image (flipped, inverted, power 0.25) with EXIF
parameters; and back: image -> mel -> inverse mel (exact NNLS or the original's SGD) -> Griffin-Lim
(momentum 0.99) -> loudness stage. The heavy parts live in stft.py, melscale.py, invmel.py and
griffinlim.py; this module holds the parameters and the image mapping.

Limits (README "Limits"): parameters are checked against the ranges in `LIMITS` when a
SpectrogramParams is made, so huge FFT sizes from an image's EXIF never reach an allocation;
spectrogram images are at most MAX_WIDTH px wide (an hour at 10 ms per pixel), MAX_FREQUENCIES
high and MAX_PIXELS in all, both when read (`open_spectrogram`, the size checked before decoding)
and when made (`audio_to_image` refuses before any work an image it could not read back).
Long images are turned into audio in pieces (`image_to_audio`, audio/join.py) and long audio into
images block by block, two passes (the image scale needs the maximum), so memory is bounded.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from minriff import atomic, images, values
from minriff.audio import join
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

MAX_FREQUENCIES = 1024  # mel bins = image height (Riffusion: 512)
MAX_WIDTH = 360_001  # px = frames: 1 + 3600 s / 10 ms, an hour at Riffusion's 10 ms per pixel
MAX_PIXELS = 512 * MAX_WIDTH  # 184 Mpixels (an hour of 512-bin spectrogram)
MAX_N_FFT = 65536  # padded window in samples (Riffusion: 17640); memory per frame grows with it
MAX_WINDOW_HOPS = 64  # window / hop (Riffusion: 10): frames per window, and the shortest image
FRAME_BLOCK = 1024  # STFT frames per block in audio_to_image: ~180 MB of working memory at Riffusion's sizes
KEEP_MEL_BYTES = 64 << 20  # audio_to_image keeps the mel of up to ~2.5 min of audio, else recomputes it
# field -> (lowest, highest): ranges a SpectrogramParams must satisfy (sizes derived from them are
# checked too: see SpectrogramParams.__post_init__)
LIMITS = {
    "sample_rate": (8000, 96000), "step_size_ms": (1, 1000), "window_duration_ms": (1, 10000),
    "padded_duration_ms": (1, 10000), "num_frequencies": (1, MAX_FREQUENCIES), "min_frequency": (0, 48000),
    "max_frequency": (1, 48000), "power_for_image": (0.01, 10.0), "max_mel_iters": (0, 10000),
    "num_griffin_lim_iters": (0, 10000),
}


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

    def __post_init__(self):
        """Every field checked against LIMITS (Python or NumPy numbers), then the derived sizes."""
        for name, (lo, hi) in LIMITS.items():
            v = getattr(self, name)
            v = values.number(v, name, lo, hi) if name == "power_for_image" else values.integer(v, name, lo, hi)
            object.__setattr__(self, name, v)
        if not isinstance(self.stereo, (bool, np.bool_)):
            raise InputError(f"stereo must be True or False, got {values.show(self.stereo)}")
        object.__setattr__(self, "stereo", bool(self.stereo))
        if self.mel_scale_norm not in (None, "slaney") or self.mel_scale_type not in ("htk", "slaney"):
            raise InputError(f"mel scale must be htk/slaney with norm None/slaney, got {self.mel_scale_type!r}/"
                             f"{self.mel_scale_norm!r}")
        hop, win, n_fft = self.hop_length, self.win_length, self.n_fft
        if hop < 1 or win < 2 or not win <= n_fft <= MAX_N_FFT or not hop <= win <= MAX_WINDOW_HOPS * hop:
            raise InputError(
                f"bad spectrogram sizes at {self.sample_rate} Hz: hop {hop}, window {win}, FFT {n_fft} samples; "
                f"need 1 <= hop <= window <= {MAX_WINDOW_HOPS} hops, window >= 2, window <= FFT <= {MAX_N_FFT}")
        if not self.min_frequency < self.max_frequency <= self.sample_rate / 2:
            raise InputError(f"bad frequency range {self.min_frequency}-{self.max_frequency} Hz "
                             f"at {self.sample_rate} Hz")

    def validate(self) -> SpectrogramParams:
        """Kept for callers of the old API: a SpectrogramParams is checked when it is made."""
        return self

    def to_exif(self) -> dict[int, int | float]:
        return {tag: (float(v) if isinstance(v, float) else int(v))
                for name, tag in EXIF_TAGS.items() for v in [getattr(self, name)]}

    @classmethod
    def from_exif(cls, exif) -> SpectrogramParams:
        """Parameters from EXIF tags; fields whose tags are absent keep their defaults. Values of the
        wrong type or out of range (LIMITS) are an InputError naming the tag."""
        kw = {}
        for f in dataclasses.fields(cls):
            tag = EXIF_TAGS.get(f.name)
            if tag is None or tag not in exif:
                continue
            v = _exif_number(exif[tag], f.name, tag)
            if f.name == "stereo":
                if v not in (0, 1):
                    raise InputError(f"EXIF tag {tag} (stereo) must be 0 or 1, got {values.show(exif[tag])}")
                v = bool(v)
            elif f.name != "power_for_image":
                if v != int(v):
                    raise InputError(f"EXIF tag {tag} ({f.name}) must be a whole number, got {values.show(v)}")
                v = int(v)
            kw[f.name] = v
        try:
            return cls(**kw)
        except InputError as e:
            raise InputError(f"spectrogram parameters from EXIF: {e}") from None


def _exif_number(v, name: str, tag: int) -> float:
    """An EXIF value as a finite float: ints, floats and rationals (a 1-tuple is unwrapped)."""
    if isinstance(v, tuple) and len(v) == 1:
        v = v[0]
    try:
        x = float(v) if isinstance(v, (int, float)) or hasattr(v, "numerator") else None
    except (ValueError, OverflowError, ZeroDivisionError):
        x = None
    if x is None or not np.isfinite(x):
        raise InputError(f"EXIF tag {tag} ({name}) must be a finite number, got {values.show(v)}")
    return x


def plan(p: SpectrogramParams) -> tuple[STFT, np.ndarray, BandedFilterbank]:
    """(STFT plan, dense mel filterbank, banded filterbank) of these parameters (cached)."""
    return _plan(p)


@lru_cache(maxsize=8)
def _plan(p: SpectrogramParams) -> tuple[STFT, np.ndarray, BandedFilterbank]:
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


def check_image_size(width: int, height: int, what: str = "spectrogram image", error=AudioError) -> None:
    """The size limits of spectrogram images (module docstring), for reading and for making them."""
    images.check_size(width, height, what, MAX_WIDTH, MAX_FREQUENCIES, MAX_PIXELS, error)


def open_spectrogram(source, what: str = "spectrogram image") -> Image.Image:
    """A spectrogram image file (path, bytes or file object) -> decoded PIL image, its size checked
    against the limits from the header, before any pixel is decoded."""
    return images.open_image(source, what, max_width=MAX_WIDTH, max_height=MAX_FREQUENCIES,
                             max_pixels=MAX_PIXELS, error=AudioError)


class _ArraySource:
    """A waveform in memory as the block source `audio_to_image` reads (io.AudioFile is the other)."""

    def __init__(self, waveform):
        w = np.asarray(waveform)
        self.wave = w[None] if w.ndim == 1 else w
        if self.wave.ndim != 2 or self.wave.shape[0] < 1 or self.wave.shape[1] < 1:
            raise AudioError(f"waveform must be (channels, samples), got shape {np.shape(waveform)}")
        self.channels, self.frames = self.wave.shape

    def pieces(self, block: int = 1 << 18):
        for a in range(0, self.frames, block):
            yield self.wave[:, a:a + block]


def _source(waveform):
    return waveform if hasattr(waveform, "pieces") else _ArraySource(waveform)


def _mel_blocks(source, p: SpectrogramParams):
    """(t0, mel (C, M, t) float64) frame block by frame block, in the original's units
    (int16-scale samples, |STFT| power 1, mel = fb.T @ |X|)."""
    plan, fb, banded = _plan(p)
    used = banded.used_bins

    def scaled(pieces):
        for piece in pieces:
            w = _as_channels(piece, p)
            if not np.all(np.isfinite(w)):
                raise AudioError("waveform contains NaN or infinite samples")
            yield w.astype(np.float32) * np.float32(INT16_SCALE)

    for t0, X in plan.frame_stream(scaled(source.pieces()), source.frames, FRAME_BLOCK):  # X (C, t, F)
        mag = np.abs(X[..., :used]).astype(np.float64)
        yield t0, (mag @ fb[:used]).transpose(0, 2, 1)


def _check_audio_width(source, p: SpectrogramParams) -> int:
    """The image width the audio will make, checked before any sample is read: channels, enough
    samples for the reflect padding of one window, and a size `open_spectrogram` reads back."""
    if source.channels not in (1, 2):
        raise AudioError(f"{source.channels}-channel audio is not supported (mono or stereo only)")
    plan, n = STFT(p.n_fft, p.hop_length, p.win_length), source.frames  # no filterbank needed yet
    width = n_frames(n, p)
    pad = max(-plan.offset, (width - 1) * plan.hop + plan.offset + plan.win - n)
    if n <= pad:
        raise AudioError(f"audio of {n} samples ({n / p.sample_rate:.3f} s) is too short for one analysis window "
                         f"of {plan.win} samples")
    check_image_size(width, p.num_frequencies, f"the spectrogram of {n / p.sample_rate:,.1f} s of audio (at "
                     f"{p.step_size_ms} ms per pixel)")
    return width


def audio_to_mel(waveform: np.ndarray, params: SpectrogramParams | None = None) -> np.ndarray:
    """waveform (C, N) float in [-1, 1] -> mel amplitudes (C, num_frequencies, T) float64, in the
    original's units (int16-scale samples, |STFT| power 1, mel = fb.T @ |X|)."""
    p = params or SpectrogramParams()
    source = _source(waveform)
    mel = np.empty((p.n_channels, p.num_frequencies, _check_audio_width(source, p)))
    for t0, block in _mel_blocks(source, p):
        mel[:, :, t0:t0 + block.shape[2]] = block
    return mel


def _quantize(mel: np.ndarray, max_value: float, power: float) -> np.ndarray:
    """mel -> uint8 pixel values 255 - 255 (mel / max)^power, truncated as the original did."""
    x = mel / max_value if max_value > 0 else np.zeros_like(mel)
    return (255.0 - 255.0 * np.power(x, power)).astype(np.uint8)


def _to_image(flipped: np.ndarray) -> Image.Image:
    """(C, M, T) uint8, row 0 = top bin -> RGB image: mono R=G=B, stereo R=0, G=left, B=right."""
    bands = [Image.fromarray(np.ascontiguousarray(c)) for c in flipped]  # (M, T) uint8: mode L
    if len(bands) == 1:
        return bands[0].convert("RGB")
    return Image.merge("RGB", [Image.new("L", bands[0].size, 0), *bands])


def mel_to_image(mel: np.ndarray, power: float = 0.25, max_value: float | None = None) -> tuple[Image.Image, float]:
    """mel (C, M, T), C in {1, 2} -> (RGB image M x T, max value). Loud = dark; row 0 = top bin.
    max_value: the amplitude that becomes black (default: the largest in `mel`; give the largest of a
    whole signal to make images of its parts that fit together; louder values are clipped to it)."""
    if mel.ndim != 3 or mel.shape[0] not in (1, 2):
        raise InputError(f"mel must be (1 or 2, mels, frames), got {mel.shape}")
    if max_value is None:
        max_value = float(np.max(mel))
    else:
        max_value = float(max_value)
        mel = np.minimum(mel, max_value)
    return _to_image(_quantize(mel, max_value, power)[:, ::-1, :]), max_value  # flip: high frequencies on top


def audio_to_image(waveform, params: SpectrogramParams | None = None) -> Image.Image:
    """waveform (C, N) float in [-1, 1] at params.sample_rate, or an `io.AudioFile` (read block by
    block) -> spectrogram image with the parameters (and MAX_VALUE) in its EXIF; save it as PNG
    with `save_image` to keep them. The size is checked before any work (MAX_WIDTH, MAX_PIXELS).
    Two passes over the audio when its mel is over KEEP_MEL_BYTES: the maximum, then the pixels."""
    p = params or SpectrogramParams()
    source = _source(waveform)
    width = _check_audio_width(source, p)
    max_value, kept, kept_bytes = 0.0, [], 0
    for t0, mel in _mel_blocks(source, p):
        max_value = max(max_value, float(np.max(mel)))
        if kept is not None:
            kept.append((t0, mel))
            kept_bytes += mel.nbytes
            kept = kept if kept_bytes <= KEEP_MEL_BYTES else None
    data = np.empty((p.n_channels, p.num_frequencies, width), np.uint8)  # rows flipped: row 0 = top bin
    for t0, mel in kept if kept is not None else _mel_blocks(source, p):
        data[:, ::-1, t0:t0 + mel.shape[2]] = _quantize(mel, max_value, p.power_for_image)
    del kept
    image = _to_image(data)
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


def _size(image) -> tuple[int, int]:
    """(width, height) of a PIL image or an (H, W[, C]) array."""
    if isinstance(image, Image.Image):
        return image.size
    shape = np.shape(image)
    if len(shape) not in (2, 3):
        raise InputError(f"expected a PIL image or an (H, W[, C]) array, got {type(image).__name__} {shape}")
    return shape[1], shape[0]


def params_from_image(image, default: SpectrogramParams | None = None) -> SpectrogramParams:
    """EXIF parameters when the image (PIL) carries them; otherwise `default` (or the defaults), with
    stereo guessed from the pixels (R = 0 everywhere while G/B are not)."""
    if isinstance(image, Image.Image):
        try:
            exif = image.getexif()
        except images.DECODE_ERRORS as e:
            raise AudioError(f"cannot read the image's EXIF parameters: {e}") from None
        if any(tag in exif for tag in EXIF_TAGS.values()):
            return SpectrogramParams.from_exif(exif)
    p = default or SpectrogramParams()
    if default is None and _looks_stereo(image):
        p = dataclasses.replace(p, stereo=True)
    return p


def _looks_stereo(image) -> bool:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            return False
        (_, r_max), (_, g_max), (_, b_max) = image.getextrema()
        return r_max == 0 and max(g_max, b_max) > 0
    rgb = images.rgb8(image, "spectrogram image", AudioError)
    return not rgb[..., 0].any() and bool(rgb[..., 1:].any())


def image_to_mel(image, params: SpectrogramParams | None = None, max_value: float = DEFAULT_MAX_VALUE) -> np.ndarray:
    """Spectrogram image (PIL or array) -> mel amplitudes (C, H, W) float32: R channel for mono, G/B
    for stereo. 16-bit and float images are scaled to 8 bits first (`minriff.images.rgb8`)."""
    p = params or params_from_image(image)
    data = images.rgb8(image, "spectrogram image", AudioError)[::-1].transpose(2, 0, 1)  # (3, H, W), row 0 = lowest
    data = data[1:3] if p.stereo else data[0:1]
    x = (255.0 - data.astype(np.float32)) / np.float32(255.0)
    return (np.power(x, np.float32(1.0 / p.power_for_image)) * np.float32(max_value)).astype(np.float32)


def _columns(image, a: int, b: int):
    return image.crop((a, 0, b, image.height)) if isinstance(image, Image.Image) else np.asarray(image)[:, a:b]


def image_to_audio(image, params: SpectrogramParams | None = None, method: str = "nnls", seed: int = 0,
                   n_iter: int | None = None, loudness: str | None = "riffusion", phase: str = "random",
                   progress=None, link_channels: bool = False, length: int | None = None) -> np.ndarray:
    """Spectrogram image (PIL or (H, W[, C]) array) -> waveform (C, (W-1)*hop) float32 in [-1, 1]
    (`length` samples if given, from (W-1)*hop to W*hop: W*hop makes every column last one hop,
    512 px -> 5.12 s, the length the server's clips have).

    method: "nnls" (exact non-negative least squares, default) or "sgd" (the original's 200-step
    SGD). n_iter: Griffin-Lim iterations (default params.num_griffin_lim_iters = 32).
    loudness: "riffusion" (the original's post-processing, §1.8), "peak" (peak to -0.1 dBFS) or None
    (raw Griffin-Lim output). phase: Griffin-Lim start, "random" (the original) or "peaks"
    (peak-locked phase-vocoder start: better spectral convergence at equal iterations).
    link_channels: stereo channels start from one random phase (`griffinlim.griffin_lim`).
    progress: optional callable(stage: str, done: int, total: int).
    Images wider than `join.chunk_width` (4096 px for mono Riffusion parameters, 2048 for stereo)
    are converted in pieces overlapping by `join.OVERLAP_PX` and crossfaded, each piece with its own
    generator seeded with `seed`: memory stays that of one piece (~2 GB), whatever the width."""
    from minriff.audio import io as audio_mod
    from minriff.audio.griffinlim import griffin_lim
    from minriff.audio.invmel import inverse_mel

    if loudness not in ("riffusion", "peak", None):
        raise InputError(f"loudness must be 'riffusion', 'peak' or None, got {loudness!r}")
    width, height = _size(image)
    check_image_size(width, height)
    p = params or params_from_image(image)
    if height != p.num_frequencies:
        raise AudioError(f"image height {height} does not match num_frequencies {p.num_frequencies}")
    n_iter = p.num_griffin_lim_iters if n_iter is None else values.integer(n_iter, "Griffin-Lim iterations", 0,
                                                                             LIMITS["num_griffin_lim_iters"][1])
    plan, fb, banded = _plan(p)
    min_width = 2 + max(-plan.offset, plan.win + plan.offset) // p.hop_length  # reflect padding must fit
    if width < min_width:
        raise AudioError(f"image is {width} px wide; at least {min_width} frames are needed")
    hop = p.hop_length
    total = (width - 1) * hop if length is None else values.integer(length, "audio length", (width - 1) * hop,
                                                                    width * hop)
    spans = join.chunks(width, join.chunk_width(plan.n_freqs, p.n_channels))
    timeline = join.Timeline(p.n_channels, total) if len(spans) > 1 else None
    for i, (a, b) in enumerate(spans):
        mel = image_to_mel(_columns(image, a, b), p)
        # torch's CPU generator stream: with torch.manual_seed(seed) the original draws the SGD init
        # and then the Griffin-Lim phases from the same global generator, in this order
        rng = Generator(seed)
        mag = inverse_mel(mel, banded, method=method, rng=rng, max_iter=p.max_mel_iters, progress=progress)
        del mel
        last = i == len(spans) - 1  # the last piece runs to `total` (past its last frame if asked)
        wave = griffin_lim(mag, plan, n_iter=n_iter, rng=rng, phase_init=phase, progress=progress,
                           link_channels=link_channels,
                           length=total - a * p.hop_length if last and length is not None else None)
        del mag
        if timeline is not None:
            timeline.add(a * p.hop_length, wave)
            if progress is not None:
                progress("audio pieces", i + 1, len(spans))
    wave = wave if timeline is None else timeline.out
    if loudness == "riffusion":
        return audio_mod.loudness_riffusion(wave)
    return audio_mod.peak_normalize(wave) if loudness == "peak" else wave
