"""The seam measure (minriff.audio.seams): the flux against a frame-by-frame reference, and the ratio
on signals whose joins are known to be seamless or not."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff.audio.seams import FRAME, HOP, seam_ratio, spectral_flux
from minriff.errors import InputError

SR = 44100


def flux_reference(wave: np.ndarray) -> np.ndarray:
    """Frame by frame, as the module docstring says: Hann frames of 2048 every 512 samples, dB
    magnitudes floored 80 dB below the loudest bin, mean |difference| over bins and channels."""
    w = np.atleast_2d(wave).astype(np.float64)
    starts = range(0, w.shape[1] - FRAME + 1, HOP)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME) / (FRAME - 1))  # np.hanning's symmetric window
    db = np.array([[20 * np.log10(np.maximum(np.abs(np.fft.rfft(ch[s:s + FRAME] * window)), 1e-30)) for s in starts]
                   for ch in w])  # (C, T, F)
    db = np.maximum(db, db.max() - 80.0)
    return np.array([np.mean(np.abs(db[:, t + 1] - db[:, t])) for t in range(db.shape[1] - 1)])


@settings(max_examples=10, deadline=None)
@given(channels=st.integers(1, 2), n=st.integers(FRAME + HOP, FRAME + 12 * HOP), seed=st.integers(0, 2**16))
def test_flux_equals_the_frame_by_frame_reference(channels, n, seed):
    wave = np.random.default_rng(seed).standard_normal((channels, n)).astype(np.float32)
    np.testing.assert_allclose(spectral_flux(wave), flux_reference(wave), rtol=1e-9, atol=1e-9)


def tones(seconds: float, freqs, seed: int = 0, noise: float = 0.002) -> np.ndarray:
    """Tones of amplitude 0.2 over white noise (default ~40 dB down)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (sum(0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in freqs)
            + noise * rng.standard_normal(t.size))[None]


JOINS = [int(s * SR) for s in (1.0, 2.0, 3.0)]


def test_a_continuous_signal_has_no_seam():
    report = seam_ratio(tones(4.0, (220, 330, 440)), SR, JOINS)
    assert 0.8 < report.mean_ratio < 1.2 and report.ratio < 1.3, report
    assert len(report.at_joins) == 3 and report.windows_inside > 100


def test_a_click_and_a_gap_are_seams_and_only_where_they_are():
    wave = tones(4.0, (220, 330, 440))
    wave[0, JOINS[1]] += 0.9
    report = seam_ratio(wave, SR, JOINS)
    at = np.array(report.at_joins) / report.inside
    assert at[1] > 2.0 and at[0] < 1.2 and at[2] < 1.2, at  # measured 2.4 at the click, 1.0 elsewhere
    assert report.ratio == pytest.approx(at[1])
    wave = tones(4.0, (220, 330, 440))
    wave[0, JOINS[2]:JOINS[2] + SR // 100] = 0  # 10 ms of silence
    at = np.array(seam_ratio(wave, SR, JOINS).at_joins) / seam_ratio(wave, SR, JOINS).inside
    assert at[2] > 1.25 and at[0] < 1.2 and at[1] < 1.2, at  # measured 1.37


def test_what_the_measure_does_not_see():
    """Its limits, pinned down: flux is averaged over all bins in dB, so a broadband noise floor
    (whose bins fluctuate by several dB from frame to frame anyway) hides short events. With the
    noise 20 dB below the tones a click reads as no seam; so do phase jumps between pure tones
    butted together. On Griffin-Lim audio (dense spectra) seams show well: see the long-piece test."""
    wave = tones(4.0, (220, 330, 440), noise=0.02)
    wave[0, JOINS[1]] += 0.9
    assert seam_ratio(wave, SR, JOINS).ratio < 1.2
    butted = np.concatenate([tones(1.0, (220, 330, 440), seed=k) for k in range(4)], axis=1)
    assert seam_ratio(butted, SR, JOINS).mean_ratio < 1.5  # measured 1.19


def test_errors():
    with pytest.raises(InputError, match="too short"):
        seam_ratio(np.zeros((1, FRAME)), SR, [100])
    with pytest.raises(InputError, match="at least one join"):
        seam_ratio(tones(1.0, (220,)), SR, [])
