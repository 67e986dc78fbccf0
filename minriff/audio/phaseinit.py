"""A better starting phase for Griffin-Lim than random: peak-locked phase-vocoder integration.

For each frame, spectral peaks are located and their frequencies refined by parabolic
interpolation of the log magnitude; a peak continues the nearest peak of the previous frame
(within `track_bins`) and advances its phase by 2π·f·hop/n_fft (f in bins, averaged over the two
frames), otherwise it starts at phase 0. Every bin in a peak's region (bounded by the magnitude
troughs between peaks) takes the peak's phase minus π·k: the window sits at the centre of the n_fft
frame, so a stationary sinusoid's spectrum alternates sign from bin to bin (identity phase locking).
Deterministic, one pass, O(C·T·F)."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _peak_locked(mag, hop, n_fft, track_bins, rel_floor, out):  # mag (C, T, F) f32 -> out (C, T, F) c64
    C, T, F = mag.shape
    two_pi = 2.0 * np.pi
    for c in range(C):
        prev_pos = np.empty(F)  # refined peak positions (bins) of the previous frame, ascending
        prev_phase = np.empty(F)
        n_prev = 0
        for t in range(T):
            frame = mag[c, t]
            peak_floor = rel_floor * frame.max()
            pos = np.empty(F)
            phase = np.empty(F)
            idx = np.empty(F, np.int64)
            n = 0
            for k in range(1, F - 1):
                a, b, d = frame[k - 1], frame[k], frame[k + 1]
                if b > peak_floor and b > a and b >= d:
                    la, lb, ld = np.log(a + 1e-30), np.log(b), np.log(d + 1e-30)
                    den = la - 2.0 * lb + ld
                    delta = 0.5 * (la - ld) / den if den < 0.0 else 0.0
                    if delta > 0.5:
                        delta = 0.5
                    elif delta < -0.5:
                        delta = -0.5
                    f = k + delta
                    # nearest previous peak (previous positions are sorted)
                    j = np.searchsorted(prev_pos[:n_prev], f)
                    best, best_d = -1, track_bins
                    for q in (j - 1, j):
                        if 0 <= q < n_prev and abs(prev_pos[q] - f) <= best_d:
                            best, best_d = q, abs(prev_pos[q] - f)
                    if best >= 0:
                        ph = prev_phase[best] + two_pi * hop * 0.5 * (prev_pos[best] + f) / n_fft
                    else:
                        ph = two_pi * hop * f * t / n_fft
                    pos[n], phase[n], idx[n] = f, ph, k
                    n += 1
            kend = F  # bins above the last non-zero magnitude keep phase 0
            while kend > 0 and frame[kend - 1] <= 0.0:
                kend -= 1
            # assign regions: bins between two peaks split at the magnitude trough
            lo = 0
            for p in range(n):
                if p + 1 < n:
                    hi = idx[p]
                    for k in range(idx[p], idx[p + 1] + 1):
                        if frame[k] < frame[hi]:
                            hi = k
                else:
                    hi = kend
                for k in range(lo, hi):
                    theta = phase[p] - np.pi * k
                    out[c, t, k] = np.complex64(np.cos(theta) + 1j * np.sin(theta))
                lo = hi
            if n == 0:
                for k in range(F):
                    out[c, t, k] = np.complex64(1.0)
            n_prev = n
            prev_pos[:n] = pos[:n]
            prev_phase[:n] = phase[:n]


def peak_locked_phase(mag: np.ndarray, hop: int, n_fft: int, track_bins: float = 4.0,
                      rel_floor: float = 1e-6) -> np.ndarray:
    """mag (C, T, F) -> unit-modulus initial angles (C, T, F) complex64."""
    mag = np.ascontiguousarray(mag, dtype=np.float32)
    out = np.ones(mag.shape, np.complex64)
    _peak_locked(mag, float(hop), float(n_fft), float(track_bins), float(rel_floor), out)
    return out
