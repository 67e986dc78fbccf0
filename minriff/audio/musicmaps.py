"""Rhythm and melody control maps read off a Riffusion spectrogram image (loud = dark, row 0 = the
highest mel bin, one column per 10 ms). Both return (H, W, 3) uint8 maps, white on black.

rhythm: onsets from the spectral flux. Energy is the image's own compressed scale,
e = (255 - pixel) / 255. The flux of column t is the half-wave rectified increase of e over `lag`
columns, averaged over the mel rows. The default lag is half an analysis window (5 columns at
Riffusion's 100 ms window and 10 ms step): a centred window starts to hear an attack half a window
early, so the column-to-column increase peaks ~5 columns before the attack, while the increase over
half a window peaks on the attack's own column. Peaks are picked as Böck et al. (2012): a local
maximum over +-`spread` columns, above the moving mean over +-`average` columns plus `delta` of the
largest flux (and at least `min_flux` in absolute terms: silence and quantisation noise give no
onsets), at least `wait` columns after the previous onset. Each onset is a full-height white line
`thickness` px wide.

melody: per column the strongest mel row between `fmin` and `fmax` Hz (rows from the HTK / Slaney mel
formula of the spectrogram's parameters), voiced where that peak is within `floor_db` dB of the
loudest peak of the clip; the rows are median-smoothed over `smooth` columns within each voiced run,
runs shorter than `min_run` columns are dropped, and consecutive columns are joined by vertical
segments, then the line is thickened to `thickness` px. Unvoiced columns stay black.
"""
from __future__ import annotations

import numpy as np

from minriff.audio.melscale import hz_to_mel
from minriff.audio.spectrogram import SpectrogramParams
from minriff.errors import InputError


def energy(image) -> np.ndarray:
    """Spectrogram image (H, W) or (H, W, 3|4) uint8 -> (H, W) float64 energy in [0, 1], 1 = loudest:
    mono images read R (R = G = B), stereo ones (R = 0 everywhere, G/B not) the mean of G and B."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        stereo = not a[:, :, 0].any() and a[:, :, 1:3].any()
        a = a[:, :, 1:3].mean(axis=2) if stereo else a[:, :, 0]
    elif a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"a spectrogram image must be (H, W) or (H, W, 3), got shape {np.shape(image)}")
    if np.asarray(image).dtype != np.uint8:
        raise InputError(f"a spectrogram image must be uint8, got {np.asarray(image).dtype}")
    return (255.0 - a.astype(np.float64)) / 255.0


def _params(height: int, params: SpectrogramParams | None) -> SpectrogramParams:
    p = params or SpectrogramParams()
    if p.num_frequencies != height:
        p = SpectrogramParams(**{**p.__dict__, "num_frequencies": height})
    return p


def default_lag(params: SpectrogramParams | None = None) -> int:
    """Half an analysis window in columns (5 at Riffusion's defaults), at least 1."""
    p = params or SpectrogramParams()
    return max(1, round(p.window_duration_ms / 2 / p.step_size_ms))


def spectral_flux(e: np.ndarray, lag: int) -> np.ndarray:
    """(H, W) energy -> (W,) mean over rows of max(0, e[:, t] - e[:, t - lag]) (column 0 before the start)."""
    before = e[:, np.maximum(np.arange(e.shape[1]) - lag, 0)]
    return np.maximum(e - before, 0.0).mean(axis=0)


def onset_columns(image, *, lag: int | None = None, params: SpectrogramParams | None = None, spread: int = 3,
                  average: int = 10, delta: float = 0.1, min_flux: float = 0.01, wait: int = 5) -> np.ndarray:
    """The onset columns of a spectrogram image (module docstring), ascending int array."""
    flux = spectral_flux(energy(image), default_lag(params) if lag is None else int(lag))
    n = flux.size
    if n == 0 or flux.max() < min_flux:
        return np.zeros(0, np.int64)
    local_max = _window(flux, spread, np.max)
    mean = _window(flux, average, np.mean)
    threshold = np.maximum(mean + delta * flux.max(), min_flux)
    picks, last = [], -wait - 1
    for t in np.flatnonzero((flux >= local_max) & (flux >= threshold)):
        if t - last > wait:
            picks.append(t)
            last = t
    return np.asarray(picks, np.int64)


def _window(x: np.ndarray, radius: int, reduce) -> np.ndarray:
    """reduce over x[t - radius : t + radius + 1] for every t (the window cut at the ends)."""
    p = np.pad(x, radius, mode="constant", constant_values=np.nan)
    win = np.lib.stride_tricks.sliding_window_view(p, 2 * radius + 1)
    return np.nanmax(win, axis=1) if reduce is np.max else np.nanmean(win, axis=1)


def rhythm(image, *, thickness: int = 3, **onset_options) -> np.ndarray:
    """Spectrogram image -> (H, W, 3) uint8: white full-height lines at the onset columns, on black."""
    e = energy(image)
    out = np.zeros(e.shape, np.uint8)
    half = max(1, int(thickness)) // 2
    for t in onset_columns(image, **onset_options):
        out[:, max(0, t - half):t - half + max(1, int(thickness))] = 255
    return np.repeat(out[:, :, None], 3, axis=2)


def mel_row(freq, params: SpectrogramParams) -> np.ndarray:
    """Frequency (Hz) -> fractional image row of the mel bin centred on it (row 0 = the top bin)."""
    n, scale = params.num_frequencies, params.mel_scale_type
    lo, hi = hz_to_mel(params.min_frequency, scale), hz_to_mel(params.max_frequency, scale)
    bin_ = (hz_to_mel(np.asarray(freq, np.float64), scale) - lo) / ((hi - lo) / (n + 1)) - 1  # centres at k+1 steps
    return (n - 1) - bin_


def pitch_rows(image, *, params: SpectrogramParams | None = None, fmin: float = 80.0, fmax: float = 2000.0,
               floor_db: float = 30.0, smooth: int = 5, min_run: int = 5) -> np.ndarray:
    """(W,) int row of the dominant pitch per column, -1 where unvoiced (module docstring)."""
    e = energy(image)
    h, w = e.shape
    p = _params(h, params)
    if not 0 < fmin < fmax:
        raise InputError(f"melody range must satisfy 0 < fmin < fmax, got {fmin}-{fmax} Hz")
    if fmin >= p.max_frequency or fmax <= p.min_frequency:
        raise InputError(f"melody range {fmin}-{fmax} Hz is outside the spectrogram's "
                         f"{p.min_frequency}-{p.max_frequency} Hz")
    top = int(np.clip(np.ceil(mel_row(min(fmax, p.max_frequency), p)), 0, h - 1))
    bottom = int(np.clip(np.floor(mel_row(max(fmin, p.min_frequency), p)), 0, h - 1))
    if top > bottom:  # a range narrower than one mel bin: its nearest bin
        top = bottom = int(np.clip(np.rint(mel_row(np.sqrt(fmin * fmax), p)), 0, h - 1))
    band = e[top:bottom + 1]  # (rows in range, W)
    rows = top + np.argmax(band, axis=0)
    peak = band.max(axis=0)
    loudest = peak.max() if w else 0.0
    if loudest <= 0:
        return np.full(w, -1, np.int64)
    voiced = peak >= loudest * 10.0 ** (-floor_db * p.power_for_image / 20.0)  # e is amplitude^power
    out = np.full(w, -1, np.int64)
    for a, b in _runs(voiced):
        if b - a >= min_run:
            out[a:b] = _median(rows[a:b], smooth)
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[(start, stop)] of the True runs of a 1-D bool mask."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def _median(x: np.ndarray, size: int) -> np.ndarray:
    r = max(0, int(size)) // 2
    if r == 0 or x.size < 2:
        return x
    win = np.lib.stride_tricks.sliding_window_view(np.pad(x, r, mode="edge"), 2 * r + 1)
    return np.median(win, axis=1).astype(np.int64)


def melody(image, *, thickness: int = 3, **pitch_options) -> np.ndarray:
    """Spectrogram image -> (H, W, 3) uint8: the dominant pitch track as a connected white line on black."""
    rows = pitch_rows(image, **pitch_options)
    h, w = energy(image).shape
    line = np.zeros((h, w), bool)
    for t in np.flatnonzero(rows >= 0):
        prev = rows[t - 1] if t > 0 and rows[t - 1] >= 0 else rows[t]
        line[min(prev, rows[t]):max(prev, rows[t]) + 1, t] = True
    out = _dilate(line, max(1, int(thickness)))
    return np.repeat((out * np.uint8(255))[:, :, None], 3, axis=2)


def _dilate(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary dilation by a size x size square (anchored at its centre, the extra px below/right)."""
    if size <= 1:
        return mask
    a, b = (size - 1) // 2, size // 2
    p = np.pad(mask, ((a, b), (a, b)))
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(size):
        for dx in range(size):
            out |= p[dy:dy + h, dx:dx + w]
    return out
