"""Griffin-Lim phase reconstruction with torchaudio's "fast Griffin-Lim" semantics (momentum 0.99):

    angles0 = complex U[0,1) + i U[0,1)   (not unit modulus, as torch.rand with a complex dtype)
    repeat n_iter:  y = istft(|S| angles);  R = stft(y);
                    angles = (R - m/(1+m) R_prev) / (|.| + 1e-16);  R_prev = R
    return istft(|S| angles)              (length (T-1)*hop)

The per-bin update is one fused Numba pass; the transforms are float32 pocketfft (stft.py)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from minriff.audio.invmel import uniform
from minriff.audio.stft import STFT
from minriff.errors import InputError


@njit(cache=True, parallel=True)
def _fast_gl_update(rebuilt, prev, mag, coef, first, spec):
    """spec = mag * a / (|a| + 1e-16), a = rebuilt - coef * prev (prev ignored when first)."""
    C, T, F = rebuilt.shape
    for ct in prange(C * T):
        c = ct // T
        t = ct % T
        for k in range(F):
            a = rebuilt[c, t, k]
            if not first:
                a = a - coef * prev[c, t, k]
            r = np.float32(np.sqrt(a.real * a.real + a.imag * a.imag) + 1e-16)
            spec[c, t, k] = a * (mag[c, t, k] / r)


def initial_angles(rng, C: int, T: int, F: int) -> np.ndarray:
    """(C, T, F) complex64 with real and imaginary parts U[0,1), drawn in torch's (C, F, T) order."""
    ri = uniform(rng, (C, F, T, 2))
    return np.ascontiguousarray((ri[..., 0] + 1j * ri[..., 1]).astype(np.complex64).transpose(0, 2, 1))


def griffin_lim(mag: np.ndarray, plan: STFT, n_iter: int = 32, momentum: float = 0.99, rng=None,
                angles: np.ndarray | None = None, phase_init: str = "random", progress=None,
                link_channels: bool = False, fixed: np.ndarray | None = None, length: int | None = None,
                spectra: list | None = None) -> np.ndarray:
    """mag (C, T, F) linear magnitudes -> waveform (C, length) float32, default length (T-1)*hop.

    phase_init: "random" (the original: complex U[0,1) from `rng`) or "peaks" (peak-locked
    phase-vocoder start, phaseinit.py: lower spectral convergence for the same iterations).
    `angles` overrides both. link_channels: every channel starts from the first channel's random
    phase (the original draws one per channel), so equal magnitudes give equal channels and similar
    ones stay in phase with each other instead of sounding decorrelated.
    fixed: complex spectra (C, K, F) of the first K frames, held as they are through every iteration
    (their magnitudes replace mag's): the rest is made consistent with them, which continues an
    earlier run's phase across a join (audio/seamless.py). spectra: a list that receives the final
    complex spectra (C, T, F)."""
    if not 0 <= momentum < 1:
        raise InputError(f"Griffin-Lim momentum must be in [0, 1), got {momentum}")
    if n_iter < 0:
        raise InputError(f"Griffin-Lim iterations must be >= 0, got {n_iter}")
    mag = np.ascontiguousarray(mag, dtype=np.float32)
    C, T, F = mag.shape
    K = 0
    if fixed is not None:
        fixed = np.asarray(fixed, dtype=np.complex64)
        K = fixed.shape[1]
        if fixed.ndim != 3 or fixed.shape[0] != C or fixed.shape[2] != F or K > T:
            raise InputError(f"fixed spectra {fixed.shape} do not fit magnitudes {mag.shape}")
        mag = mag.copy()
        mag[:, :K] = np.abs(fixed)
    if angles is None and phase_init == "peaks":
        from minriff.audio.phaseinit import peak_locked_phase

        angles = peak_locked_phase(mag, plan.hop, plan.n_fft)
    elif angles is None and phase_init == "random":
        angles = initial_angles(np.random.default_rng(0) if rng is None else rng, 1 if link_channels else C, T, F)
        angles = np.ascontiguousarray(np.broadcast_to(angles, (C, T, F)))
    elif angles is None:
        raise InputError(f"phase_init must be 'random' or 'peaks', got {phase_init!r}")
    spec = (mag * angles).astype(np.complex64)
    if K:
        spec[:, :K] = fixed
    coef = np.complex64(momentum / (1.0 + momentum))
    prev = None
    for i in range(n_iter):
        rebuilt = plan.frames(plan.inverse(spec))
        _fast_gl_update(rebuilt, rebuilt if prev is None else prev, mag, coef, prev is None or momentum == 0, spec)
        prev = rebuilt
        if K:
            spec[:, :K] = fixed
        if progress is not None:
            progress("griffin-lim", i + 1, n_iter)
    if spectra is not None:
        spectra.append(spec)
    return plan.inverse(spec, length)


def spectral_convergence(mag: np.ndarray, wave: np.ndarray, plan: STFT) -> float:
    """|| |STFT(wave)| - mag ||_F / ||mag||_F over the frames both share; mag (C, T, F)."""
    X = np.abs(plan.frames(wave))
    T = min(X.shape[1], mag.shape[1])
    d = X[:, :T] - mag[:, :T]
    return float(np.linalg.norm(d) / max(np.linalg.norm(mag[:, :T]), 1e-30))
