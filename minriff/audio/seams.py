"""How audible is a join? A seam measure for audio made in pieces (long pieces, remixes).

    report = seam_ratio(wave, sample_rate, joins=[220500, 441000])   # join positions in samples
    report.ratio        # worst join / typical stretch inside the clips; about 1 = no seam

Spectral flux: the audio is cut into 2048-sample frames (hop 512, ~11.6 ms at 44.1 kHz, Hann),
each frame's magnitude spectrum is taken in dB (floored 80 dB below the loudest bin), and the flux
between neighbouring frames is the mean over bins of |dB(t+1) - dB(t)|, averaged over channels.
A seam (a click, a jump in timbre or level, a gap) makes the flux rise where the pieces meet.

The ratio compares like with like: at each join, the mean flux over the frames within `radius_s`
(25 ms: the 4-5 frames a click disturbs) of it; inside the clips, the same mean over every window
of that length that stays clear of the joins, whose median is "typical". `ratio` is the worst
join over typical, `mean_ratio` the joins' average over typical. Seamless joins give about 1
(on the tiny model's audio the 95th percentile of windows without any join is ~1.8 times the
median); audio of separately converted clips butted together gives 2.5-3 at every join
(tests/pipeline/test_longform.py shows both).

What it does not see (tests/audio/test_seams.py): the flux is a mean over all bins in dB, so a
broadband noise floor, whose bins change by several dB from frame to frame anyway, hides short
events: a click over noise 20 dB below the music reads ~1, and phase jumps between butted pure tones
~1.2. It suits dense spectra like Griffin-Lim's output, where it was calibrated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minriff.errors import InputError

FRAME = 2048
HOP = 512
FLOOR_DB = 80.0


@dataclass(frozen=True)
class SeamReport:
    ratio: float  # worst join / inside
    mean_ratio: float  # mean over joins / inside
    at_joins: tuple  # the mean flux near each join
    inside: float  # median over the windows away from the joins of their mean flux
    windows_inside: int  # how many such windows there were

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "mean_ratio": self.mean_ratio, "at_joins": list(self.at_joins),
                "inside": self.inside, "windows_inside": self.windows_inside}


def spectral_flux(wave: np.ndarray) -> np.ndarray:
    """(C, N) or (N,) -> flux (T - 1,): flux[t] between frames t and t+1 (frame t starts at t * HOP)."""
    w = np.atleast_2d(np.asarray(wave, dtype=np.float64))
    if w.shape[1] < FRAME + HOP:
        raise InputError(f"audio of {w.shape[1]} samples is too short for the seam measure "
                         f"(at least {FRAME + HOP})")
    frames = np.lib.stride_tricks.sliding_window_view(w, FRAME, axis=1)[:, ::HOP]  # (C, T, FRAME)
    mag = np.abs(np.fft.rfft(frames * np.hanning(FRAME), axis=-1))  # (C, T, F)
    db = 20.0 * np.log10(np.maximum(mag, 1e-30))
    db = np.maximum(db, db.max() - FLOOR_DB)
    return np.mean(np.abs(np.diff(db, axis=1)), axis=(0, 2))  # (T - 1,)


def seam_ratio(wave: np.ndarray, sample_rate: int, joins, radius_s: float = 0.025) -> SeamReport:
    """Spectral-flux seam measure of `wave` at the sample positions `joins` (module docstring)."""
    flux = spectral_flux(wave)
    radius = max(1, int(round(radius_s * sample_rate / HOP)))
    width = 2 * radius + 1
    joins = [int(j) for j in joins]
    if not joins:
        raise InputError("seam_ratio needs at least one join position")
    if len(flux) < width:
        raise InputError("audio too short for the seam measure's window")
    # flux[t] compares the frames centred at t * HOP + FRAME / 2 and one hop later
    frame_of = [int(np.clip(round((j - FRAME / 2 - HOP / 2) / HOP), 0, len(flux) - 1)) for j in joins]
    at = tuple(float(flux[max(0, f - radius):f + radius + 1].mean()) for f in frame_of)
    near = np.zeros(len(flux), bool)
    for f in frame_of:
        near[max(0, f - 2 * radius):f + 2 * radius + 1] = True  # a join's reach, with a margin
    win_mean = np.lib.stride_tricks.sliding_window_view(flux, width).mean(axis=1)  # window starting at t
    clear = ~np.lib.stride_tricks.sliding_window_view(near, width).any(axis=1)
    if not clear.any():
        raise InputError("no stretch of audio far enough from the joins to compare with")
    inside = max(float(np.median(win_mean[clear])), 1e-12)
    return SeamReport(ratio=max(at) / inside, mean_ratio=float(np.mean(at)) / inside, at_joins=at, inside=inside,
                      windows_inside=int(clear.sum()))
