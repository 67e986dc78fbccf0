"""Endless audio from consecutive spectrogram clips, with no seam where one clip meets the next.

Each clip's spectrogram (512 columns = frames on the 10 ms grid) continues the previous one's frame
grid, so clip k's frame t sits at global frame k*512 + t and the clips laid end to end are one long
spectrogram. `SeamlessAudio.push(image)` turns the next clip into the next piece of one waveform:

- **Phase runs on.** Griffin-Lim runs on [the last CONTEXT_FRAMES frames of the previous clip | the
  new clip], with the context frames' complex spectra held at the previous run's final values
  (`griffin_lim(fixed=...)`): the new frames' phases are made consistent with what was already played.
- **The overlap is recomputed, then crossfaded.** Samples within half a window (HOLD = win/2 = 2205
  samples, 50 ms) of a clip's end depend on the next clip's first frames, so they are held back and
  emitted with the next piece: a linear crossfade from the earlier version to the new one, which
  differ only by the new frames' contribution (both have the same phase, so nothing cancels).
- **Loudness follows, smoothly.** Each clip gets the original's loudness stage as one gain
  (`clip_gain`: RMS to -12 dBFS, saturating, peak to -0.1 dBFS, reference/riffusion.md §1.8) and the
  gain ramps from the previous clip's value to the new one over the crossfade.

So piece 0 covers global samples [0, 512*441 - HOLD) and piece k >= 1 covers
[k*512*441 - HOLD, (k+1)*512*441 - HOLD): every piece after the first is exactly as long as its clip
(5.12 s for 512 px), and the pieces played back to back are the whole waveform. `flush()` returns the
held-back tail (faded out) when the stream ends. `seam_steps` measures a join against its inside.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from minriff.audio.griffinlim import griffin_lim
from minriff.audio.invmel import inverse_mel
from minriff.audio.spectrogram import SpectrogramParams, image_to_mel, plan
from minriff.errors import InputError
from minriff.rng import Generator

CONTEXT_FRAMES = 16  # > the 10 frames one window spans, so every new frame that overlaps old ones sees them
PEAK = 10.0 ** (-0.1 / 20.0)  # the original's final peak, -0.1 dBFS
TARGET_RMS = 10.0 ** (-12.0 / 20.0)  # its loudness target, -12 dBFS


def clip_gain(wave: np.ndarray) -> float:
    """The original's loudness stage (peak-normalise, gain to -12 dBFS RMS with saturation, peak to
    -0.1 dBFS) as one gain G: its output is clip(wave * G, -PEAK, PEAK) up to int16 rounding."""
    w = np.asarray(wave, dtype=np.float64)
    peak = float(np.max(np.abs(w))) if w.size else 0.0
    if peak == 0.0 or not np.isfinite(peak):
        return 1.0
    rms = float(np.sqrt(np.mean(w * w)))
    return PEAK * max(1.0 / peak, TARGET_RMS / rms)


class SeamlessAudio:
    """Spectrogram clips in, one continuous waveform out, piece by piece (see the module docstring).
    Holds only the previous clip's last frames and 50 ms of samples: memory does not grow."""

    def __init__(self, params: SpectrogramParams | None = None, method: str = "nnls", seed: int = 0,
                 n_iter: int | None = None, context: int = CONTEXT_FRAMES):
        self.params = params or SpectrogramParams()
        self.plan, _, self.banded = plan(self.params)
        self.hold = self.params.win_length // 2
        self.method, self.seed, self.context = method, seed, int(context)
        self.n_iter = self.params.num_griffin_lim_iters if n_iter is None else n_iter
        self._ctx_mag = self._ctx_spec = None  # (C, K, F) of the previous clip's last frames
        self._held = None  # (C, hold) raw samples before the previous clip's end
        self._gain = None
        self.clips = 0
        self.position = 0  # global index of the next sample push() returns

    def push(self, image, progress=None) -> np.ndarray:
        """The next clip's spectrogram (PIL image or (512, W, 3) uint8) -> the next piece (C, n)
        float32 in [-PEAK, PEAK]. progress(stage, done, total) as in image_to_audio."""
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        p, hop = self.params, self.plan.hop
        if image.height != p.num_frequencies or image.width < 2:
            raise InputError(f"a stream clip must be {p.num_frequencies} px high and at least 2 px wide, "
                             f"got {image.width}x{image.height}")
        mel = image_to_mel(image, p)  # (C, M, W)
        mag = inverse_mel(mel, self.banded, method=self.method, rng=Generator(self.seed + self.clips),
                          max_iter=p.max_mel_iters, progress=progress)  # (C, W, F)
        K = 0 if self._ctx_mag is None else self._ctx_mag.shape[1]
        if K and self._ctx_mag.shape[0] != mag.shape[0]:
            raise InputError("a stream cannot change between mono and stereo")
        ext = mag if not K else np.concatenate([self._ctx_mag, mag], axis=1)
        spectra: list = []
        length = ext.shape[1] * hop  # through the new clip's last column
        wave = griffin_lim(ext, self.plan, n_iter=self.n_iter, rng=Generator(self.seed + self.clips),
                           fixed=self._ctx_spec, length=length, spectra=spectra, progress=progress)
        keep = min(self.context, ext.shape[1])
        self._ctx_mag, self._ctx_spec = ext[:, -keep:].copy(), spectra[0][:, -keep:].copy()
        join = K * hop  # local index of the new clip's first sample
        gain = clip_gain(wave[:, join:])
        hold = min(self.hold, length - join)
        if self._held is None:
            raw = wave[:, : length - hold]
            gains = np.full(raw.shape[1], gain, np.float32)
        else:
            n = self._held.shape[1]
            raw = wave[:, join - n : length - hold].copy()
            ramp = (np.arange(n, dtype=np.float32) + 0.5) / np.float32(n)
            raw[:, :n] = self._held * (1 - ramp) + raw[:, :n] * ramp
            gains = np.full(raw.shape[1], gain, np.float32)
            gains[:n] = self._gain * (1 - ramp) + gain * ramp
        self._held, self._gain = wave[:, length - hold :].copy(), gain
        self.clips += 1
        self.position += raw.shape[1]
        return np.clip(raw * gains, -PEAK, PEAK).astype(np.float32)

    def flush(self) -> np.ndarray:
        """The held-back end of the last clip, faded out over its 50 ms (the stream ends here)."""
        if self._held is None:
            return np.zeros((self.params.n_channels, 0), np.float32)
        n = self._held.shape[1]
        fade = 1 - (np.arange(n, dtype=np.float32) + 0.5) / np.float32(n)
        out = np.clip(self._held * self._gain * fade, -PEAK, PEAK).astype(np.float32)
        self._held = None
        self.position += n
        return out


def seam_steps(wave: np.ndarray, joins, guard: int = 2205) -> dict:
    """How a join looks against the inside of the clips. A click is a jump in the waveform's value
    or slope, which the second difference y[i+1] - 2 y[i] + y[i-1] shows sharply (music made from a
    10 kHz spectrogram is smooth at 44.1 kHz). For each join j (the first sample of a new piece):
    `join_steps`, the larger |second difference| centred on j-1 or j; `share_larger_inside`, the
    share of positions farther than `guard` samples from any join whose value (the same larger-of-two)
    is larger. A click scores near 0; a seamless join looks like any sample (about 0.5 on average)."""
    y = np.asarray(wave, dtype=np.float64)
    y = y[None] if y.ndim == 1 else y
    d2 = np.abs(np.diff(y, n=2, axis=1)).max(axis=0)  # d2[i] is centred on sample i + 1
    pair = np.maximum(d2[:-1], d2[1:])  # pair[i]: the samples i + 1 and i + 2, i.e. a join at i + 2
    joins = [int(j) for j in joins]
    inside = np.ones(pair.shape[0], bool)
    for j in joins:
        inside[max(0, j - 2 - guard) : j - 2 + guard] = False
    ref = np.sort(pair[inside])
    at = np.array([pair[j - 2] for j in joins])
    larger = 1.0 - np.searchsorted(ref, at, side="right") / max(ref.size, 1)
    return {"join_steps": at, "share_larger_inside": larger,
            "inside_percentiles": {q: float(np.percentile(ref, q)) for q in (50, 99, 99.9, 100)}}
