"""Mel filterbanks with torchaudio's `melscale_fbanks` semantics (htk or slaney scale, norm None or
"slaney"), computed in float64, plus a banded view of the same matrix for fast kernels.

Facts used (torchaudio functional): frequency axis linspace(0, sample_rate // 2, n_freqs); n_mels + 2
points equally spaced in mel between mel(f_min) and mel(f_max), mapped back to Hz; filter m rises
from point m to m+1 and falls to m+2 (peak 1); slaney norm multiplies filter m by
2 / (f[m+2] - f[m])."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minriff.errors import InputError

_SLANEY_F_SP = 200.0 / 3.0
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(freq, mel_scale: str = "htk"):
    f = np.asarray(freq, dtype=np.float64)
    if mel_scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    _check_scale(mel_scale)
    linear = f / _SLANEY_F_SP
    with np.errstate(divide="ignore"):
        log = _SLANEY_MIN_LOG_MEL + np.log(np.maximum(f, 1e-300) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return np.where(f >= _SLANEY_MIN_LOG_HZ, log, linear)


def mel_to_hz(mels, mel_scale: str = "htk"):
    m = np.asarray(mels, dtype=np.float64)
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    _check_scale(mel_scale)
    linear = _SLANEY_F_SP * m
    log = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (m - _SLANEY_MIN_LOG_MEL))
    return np.where(m >= _SLANEY_MIN_LOG_MEL, log, linear)


def _check_scale(mel_scale: str) -> None:
    if mel_scale not in ("htk", "slaney"):
        raise InputError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")


def melscale_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int,
                    norm: str | None = None, mel_scale: str = "htk") -> np.ndarray:
    """Triangular filterbank, shape (n_freqs, n_mels) float64: mel = |X|.T @ fb."""
    _check_scale(mel_scale)
    if norm not in (None, "slaney"):
        raise InputError(f"mel norm must be None or 'slaney', got {norm!r}")
    if not (0 <= f_min < f_max) or n_mels < 1 or n_freqs < 2:
        raise InputError(f"bad mel filterbank parameters: f_min={f_min}, f_max={f_max}, "
                         f"n_mels={n_mels}, n_freqs={n_freqs}")
    all_freqs = np.linspace(0.0, float(sample_rate // 2), n_freqs)  # (F,)
    m_pts = np.linspace(hz_to_mel(f_min, mel_scale), hz_to_mel(f_max, mel_scale), n_mels + 2)
    f_pts = mel_to_hz(m_pts, mel_scale)  # (M+2,)
    f_diff = np.diff(f_pts)  # (M+1,)
    slopes = f_pts[None, :] - all_freqs[:, None]  # (F, M+2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))  # (F, M)
    if norm == "slaney":
        fb *= 2.0 / (f_pts[2:] - f_pts[:-2])
    return fb


@dataclass(frozen=True)
class BandedFilterbank:
    """The same matrix stored per mel filter as a contiguous run of linear bins.

    Filter m covers bins start[m] .. start[m]+length[m]-1 with weights
    weights[offset[m] : offset[m]+length[m]]. A linear bin lies inside at most two adjacent
    filters, so fb.T @ diag(d) @ fb is tridiagonal — what the NNLS solver exploits."""

    n_freqs: int
    start: np.ndarray  # (M,) int64
    length: np.ndarray  # (M,) int64
    offset: np.ndarray  # (M+1,) int64
    weights: np.ndarray  # (nnz,) float64

    @property
    def n_mels(self) -> int:
        return len(self.start)

    @property
    def used_bins(self) -> int:
        """Bins >= used_bins carry no weight in any filter."""
        return int(np.max(self.start + self.length)) if self.n_mels else 0

    @classmethod
    def from_dense(cls, fb: np.ndarray) -> BandedFilterbank:
        n_freqs, n_mels = fb.shape
        start = np.zeros(n_mels, np.int64)
        length = np.zeros(n_mels, np.int64)
        chunks = []
        for m in range(n_mels):
            nz = np.flatnonzero(fb[:, m])
            if len(nz):
                start[m], length[m] = nz[0], nz[-1] - nz[0] + 1
                chunks.append(fb[nz[0] : nz[-1] + 1, m])
        offset = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
        weights = np.concatenate(chunks) if chunks else np.zeros(0)
        return cls(n_freqs, start, length, offset, weights.astype(np.float64))

    def to_dense(self) -> np.ndarray:
        fb = np.zeros((self.n_freqs, self.n_mels))
        for m in range(self.n_mels):
            s, n, o = self.start[m], self.length[m], self.offset[m]
            fb[s : s + n, m] = self.weights[o : o + n]
        return fb
