"""Joining audio made in pieces: long spectrograms are converted in overlapping windows and the
waveforms crossfaded, so memory stays bounded while the result has no seam at the joins."""
from __future__ import annotations

import numpy as np

CHUNK_PX = 4096  # mono, Riffusion's 8821 frequency bins: ~2 GB peak for the piece's Griffin-Lim
OVERLAP_PX = 64
REFERENCE_BINS = 8821  # the frequency bins CHUNK_PX is sized for


def chunk_width(n_freqs: int = REFERENCE_BINS, channels: int = 1) -> int:
    """Widest piece whose working set (channels x width x frequency bins) is at most that of a mono
    CHUNK_PX-wide Riffusion spectrogram; at least 4 overlaps, at most 16 x CHUNK_PX."""
    return min(16 * CHUNK_PX, max(4 * OVERLAP_PX, CHUNK_PX * REFERENCE_BINS // (n_freqs * channels)))


def chunks(width: int, chunk: int | None = None, overlap: int | None = None) -> list[tuple[int, int]]:
    """Pixel ranges [a, b) covering `width`, each at most `chunk` (CHUNK_PX) wide, neighbours sharing
    `overlap` (OVERLAP_PX) columns."""
    chunk = CHUNK_PX if chunk is None else chunk
    overlap = OVERLAP_PX if overlap is None else overlap
    if width <= chunk:
        return [(0, width)]
    step = chunk - overlap
    starts = list(range(0, width - overlap, step))
    return [(a, min(a + chunk, width)) for a in starts]


class Timeline:
    """The joined waveform (C, length), built piece by piece as the pieces are made (no list of
    pieces held until the end): where a piece overlaps the previous one, fade linearly from the
    earlier to the later one."""

    def __init__(self, channels: int, length: int):
        self.out = np.zeros((channels, length), np.float32)
        self.end_prev = 0

    def add(self, start: int, wave: np.ndarray) -> None:
        out, length = self.out, self.out.shape[1]
        n = min(wave.shape[1], length - start)
        wave = wave[:, :n]
        overlap = max(0, min(self.end_prev - start, n))
        if overlap:
            ramp = np.linspace(0.0, 1.0, overlap, dtype=np.float32)
            out[:, start:start + overlap] = out[:, start:start + overlap] * (1 - ramp) + wave[:, :overlap] * ramp
        out[:, start + overlap:start + n] = wave[:, overlap:]
        self.end_prev = start + n


def crossfade(pieces: list, length: int) -> np.ndarray:
    """Place (start_sample, wave (C, n)) pieces on one timeline (`Timeline`)."""
    timeline = Timeline(pieces[0][1].shape[0], length)
    for start, wave in pieces:
        timeline.add(start, wave)
    return timeline.out
