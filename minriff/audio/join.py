"""Joining audio made in pieces: long spectrograms are converted in overlapping windows and the
waveforms crossfaded, so memory stays bounded while the result has no seam at the joins
(`image_to_wave`; the pipeline's `spectrogram_to_audio` uses it)."""
from __future__ import annotations

import numpy as np

CHUNK_PX = 4096
OVERLAP_PX = 64


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


def crossfade(pieces: list, length: int) -> np.ndarray:
    """Place (start_sample, wave (C, n)) pieces on one timeline; where two overlap, fade linearly
    from the earlier to the later one."""
    channels = pieces[0][1].shape[0]
    out = np.zeros((channels, length), np.float32)
    end_prev = 0
    for start, wave in pieces:
        n = min(wave.shape[1], length - start)
        wave = wave[:, :n]
        overlap = max(0, min(end_prev - start, n))
        if overlap:
            ramp = np.linspace(0.0, 1.0, overlap, dtype=np.float32)
            out[:, start:start + overlap] = out[:, start:start + overlap] * (1 - ramp) + wave[:, :overlap] * ramp
        out[:, start + overlap:start + n] = wave[:, overlap:]
        end_prev = start + n
    return out


def image_to_wave(rgb: np.ndarray, params=None, method: str = "nnls", seed: int = 0, quiet: bool = False,
                  link_channels: bool = False) -> np.ndarray:
    """(512, W, 3) uint8 spectrogram of any width -> raw waveform (C, (W - 1) * hop) float32 (no
    loudness stage): pieces of CHUNK_PX columns converted one after the other, crossfaded over
    OVERLAP_PX. params: `SpectrogramParams` (default: from the pixels). A progress bar per stage
    unless quiet."""
    from PIL import Image

    from minriff.audio.spectrogram import SpectrogramParams, image_to_audio
    from minriff.progress import StageProgress

    hop = (params or SpectrogramParams()).hop_length
    pieces = []
    for a, b in chunks(rgb.shape[1]):
        wave = image_to_audio(Image.fromarray(np.ascontiguousarray(rgb[:, a:b])), params, method=method, seed=seed,
                              loudness=None, progress=StageProgress(quiet), link_channels=link_channels)
        pieces.append((a * hop, wave))
    return crossfade(pieces, (rgb.shape[1] - 1) * hop)
