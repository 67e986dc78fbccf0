"""`minriff bench seams`: how audible the joins of long pieces and remixes are (audio.seams).

Rows, each a seam ratio (1 = a join is as smooth as a typical stretch of the same audio; the worst
join and the mean over joins), measured on one model (default: the tiny random model, in memory):
- long piece: the joins where each clip's new part starts; the middles of the clips' new parts in
  the same audio (no join there: what chance gives); the same clips converted one by one and
  butted together (what a real seam gives).
- remix, join="spectrogram" (default) and join="audio" (the original's per-window audio,
  crossfaded): the middles and the edges of the crossfaded overlaps, at strength 0 (the join
  alone) and 0.55. Also the level at the overlap middles relative to the windows' middles (dB):
  two independently phased signals crossfaded linearly lose up to 3 dB there.
The remix input is reference/golden/clip.wav looped when it is there, else synthetic music.
This is a report, not a speed benchmark: no baselines to time."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from minriff.bench.common import emit

HOP, SR = 441, 44100


def _music(seconds: float) -> np.ndarray:
    shared = Path(os.environ.get("MINRIFF_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
    clip = shared / "reference" / "golden" / "clip.wav"
    n = int(seconds * SR)
    if clip.is_file():
        from minriff.audio.io import load_audio

        wave = load_audio(clip)[:1]
        return np.tile(wave, (1, n // wave.shape[1] + 1))[:, :n]
    rng = np.random.default_rng(0)
    t = np.arange(n) / SR
    beat = np.exp(-((t * 1.5625) % 1.0) * 10.0)  # 93.75 BPM, Riffusion's seed-image tempo
    return (0.2 * np.sin(2 * np.pi * 220 * t) + 0.15 * np.sin(2 * np.pi * 277 * t)
            + 0.3 * beat * rng.standard_normal(n))[None].astype(np.float32)


def _level_db(wave: np.ndarray, centres: list[int], half: int = 2205) -> float:
    def rms(c):
        seg = wave[:, max(0, c - half):c + half].astype(np.float64)
        return np.sqrt(np.mean(seg ** 2))

    return float(20 * np.log10(np.mean([rms(c) for c in centres]) + 1e-12))


def _row(what: str, where: str, wave: np.ndarray, joins: list[int], **extra) -> dict:
    from minriff.audio.seams import seam_ratio

    r = seam_ratio(wave, SR, joins)
    return {"what": what, "where": where, "joins": len(joins), "worst": r.ratio, "mean": r.mean_ratio, **extra}


def _long_rows(riff, seconds: float, steps: int) -> list[dict]:
    from minriff.longform import plan_clips

    image = riff.generate_long("lofi hip hop beat", seconds, steps=steps, seed=1)
    clips = plan_clips(image.shape[1])
    wave = riff.spectrogram_to_audio(image)
    joins = [c.new_start * HOP for c in clips[1:]]
    middles = [(c.new_start + c.end) // 2 * HOP for c in clips[1:-1]]
    edges = [0] + [c.new_start for c in clips[1:]] + [image.shape[1] - 1]
    butted = np.concatenate([riff.spectrogram_to_audio(image[:, a:b + 1]) for a, b in zip(edges, edges[1:])], axis=1)
    return [_row("long piece", "clip joins", wave, joins), _row("long piece", "clip middles (no join)", wave, middles),
            _row("clips butted", "clip joins", butted, joins)]


def _remix_rows(riff, wave: np.ndarray, strength: float, steps: int) -> list[dict]:
    from minriff.remix import OVERLAP_PX, window_starts

    _, starts = window_starts(wave.shape[1], HOP, 512, OVERLAP_PX)
    n = wave.shape[1]
    mids = [(a + OVERLAP_PX // 2) * HOP for a in starts[1:] if (a + OVERLAP_PX) * HOP < n]
    edges = [e * HOP for a in starts[1:] for e in (a, a + OVERLAP_PX) if (a + OVERLAP_PX) * HOP < n]
    inner = [(a + 256) * HOP for a in starts if (a + 512) * HOP < n]  # the windows' middles: no overlap
    rows = []
    for how in ("spectrogram", "audio"):
        out, _ = riff.remix(wave, "jazz piano", strength, sample_rate=SR, steps=steps, seed=1, join=how)
        dip = _level_db(out, mids) - _level_db(out, inner)
        rows.append(_row(f"remix {strength:g}, join={how}", "overlap middles", out, mids, level_db=dip))
        rows.append(_row(f"remix {strength:g}, join={how}", "overlap edges", out, edges))
    return rows


def run(args) -> int:
    from minriff import Riffusion

    quick = bool(getattr(args, "quick", False))
    if args.weights:
        riff = Riffusion.load(args.weights, backend=args.backend, quiet=True)
        source = str(args.weights)
    else:
        from minriff.models import random_models

        riff, source = Riffusion(random_models("tiny"), backend=args.backend, quiet=True), "tiny random model"
    steps = 2 if quick else 4
    seconds = 12.0 if quick else 30.0
    t0 = time.perf_counter()
    rows = _long_rows(riff, seconds, steps)
    music = _music(seconds)
    for strength in (0.0, 0.55):
        rows += _remix_rows(riff, music, strength, steps)
    emit(rows, args.json, "seams: flux ratio at joins (1 = like anywhere else; bigger = audible)",
         {"model": source, "seconds": seconds, "steps": steps, "wall_s": round(time.perf_counter() - t0, 1)})
    return 0
