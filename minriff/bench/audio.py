"""`minriff bench audio`: a 512x512 spectrogram image -> audio, minriff vs librosa in the same run.

Rows: inverse mel (minriff nnls, minriff sgd, librosa pseudo-inverse — librosa.util.nnls's own
initialiser clip(pinv(fb) @ M, 0) — and librosa.feature.inverse.mel_to_stft on a few frames,
extrapolated to 512 because its L-BFGS-B solve over all frames would need ~40+ GiB), Griffin-Lim
with 32 iterations on the same magnitudes (minriff vs librosa.griffinlim, momentum 0.99), and the
whole image -> audio path. Quality: spectral convergence ||S(y)| - target| / |target| both against
the linear magnitudes fed to Griffin-Lim (sc_linear) and, re-analysed to mel, against the image's
mel (sc_mel). Ratios are librosa time / minriff time (> 1 means minriff is faster)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from minriff.bench.common import emit

W = 512


def _input_image():
    from minriff.audio.spectrogram import SpectrogramParams, audio_to_image

    shared = Path(os.environ.get("MINRIFF_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
    clip = shared / "reference" / "golden" / "clip.wav"
    p = SpectrogramParams()
    n = (W - 1) * p.hop_length
    if clip.is_file():
        from minriff.audio.io import load_audio

        wave, source = load_audio(clip)[:1, :n], "golden clip.wav (first 512 frames, left)"
    else:
        t = np.arange(n) / p.sample_rate
        rng = np.random.default_rng(0)
        wave = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 2 * t)) + 0.2 * np.sin(2 * np.pi * 1318 * t)
                + 0.05 * rng.standard_normal(n))[None].astype(np.float32)
        source = "synthetic tones + noise"
    return audio_to_image(wave, p), source


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _sc(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def run(args) -> int:
    from minriff.audio.griffinlim import griffin_lim
    from minriff.audio.invmel import inverse_mel
    from minriff.audio.spectrogram import SpectrogramParams, _plan, image_to_mel
    from minriff.rng import Generator

    quick = bool(getattr(args, "quick", False))
    p = SpectrogramParams()
    plan, fb, banded = _plan(p)
    image, source = _input_image()
    mel = image_to_mel(image, p)  # (1, 512, 512)
    used = banded.used_bins

    def mel_of(wave):  # re-analysis of a waveform, in the image's mel units
        return np.abs(plan.frames(wave))[..., :used].astype(np.float64) @ fb[:used]  # (1, T, M)

    target_mel = mel.transpose(0, 2, 1).astype(np.float64)

    def quality(mag, wave):
        X = np.abs(plan.frames(wave))
        s = mel_of(wave)
        scale = np.vdot(s, target_mel).real / max(np.vdot(s, s).real, 1e-30)  # loudness-free comparison
        return _sc(X, mag), _sc(scale * s, target_mel)

    # warm-up: numba compilation / cache load is not part of the timing
    inverse_mel(mel[:, :, :8], banded, "nnls")
    inverse_mel(mel[:, :, :8], banded, "sgd", rng=np.random.default_rng(0), max_iter=2)
    griffin_lim(np.ones((1, 8, plan.n_freqs), np.float32), plan, n_iter=1)

    def mel_fit(mag, frames=None):  # how well the linear magnitudes reproduce the image's mel
        tm = target_mel if frames is None else target_mel[:, :frames]
        return _sc(mag[..., :used].astype(np.float64) @ fb[:used], tm)

    def row(stage, impl, seconds, fit=None, sc_lin=None, sc_mel=None):
        return dict(stage=stage, impl=impl, seconds=seconds, mel_fit=fit, sc_linear=sc_lin, sc_mel=sc_mel)

    rows, mags = [], {}
    mags["nnls"], t = _timed(lambda: inverse_mel(mel, banded, "nnls"))
    rows.append(row("inverse mel", "minriff nnls", t, mel_fit(mags["nnls"])))
    if not quick:
        mags["sgd"], t = _timed(lambda: inverse_mel(mel, banded, "sgd", rng=Generator(0), max_iter=p.max_mel_iters))
        rows.append(row("inverse mel", "minriff sgd (200 steps)", t, mel_fit(mags["sgd"])))

    librosa = _librosa()
    if librosa is not None:
        def pinv_inverse():
            basis = librosa.filters.mel(sr=p.sample_rate, n_fft=p.n_fft, n_mels=p.num_frequencies, fmin=p.min_frequency,
                                        fmax=p.max_frequency, htk=True, norm=None)
            x = np.einsum("fm,mt->ft", np.linalg.pinv(basis), mel[0], optimize=True)
            return np.clip(x, 0, None).T[None].astype(np.float32)  # (1, T, F)
        mags["librosa pinv"], t = _timed(pinv_inverse)
        rows.append(row("inverse mel", "librosa pinv (nnls init)", t, mel_fit(mags["librosa pinv"])))
        n_lib = 0 if quick else int(os.environ.get("MINRIFF_BENCH_LIBROSA_FRAMES", "4"))
        if n_lib:
            S_lib, t = _timed(lambda: librosa.feature.inverse.mel_to_stft(
                mel[0][:, :n_lib], sr=p.sample_rate, n_fft=p.n_fft, power=1.0, fmin=p.min_frequency,
                fmax=p.max_frequency, htk=True, norm=None))
            rows.append(row("inverse mel", f"librosa mel_to_stft ({n_lib} frames, x{W // n_lib} extrapolated)",
                            t * W / n_lib, mel_fit(S_lib.T[None], n_lib)))

    import numba

    from minriff.audio.stft import STFT

    def lib_gl(S):
        return librosa.griffinlim(S, n_iter=p.num_griffin_lim_iters, hop_length=p.hop_length, win_length=p.win_length,
                                  n_fft=p.n_fft, window="hann", center=True, momentum=0.99, init="random",
                                  random_state=0)[None].astype(np.float32)

    def one_thread_gl():
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return griffin_lim(mags["nnls"], plan_1, n_iter=p.num_griffin_lim_iters, rng=Generator(0))
        finally:
            numba.set_num_threads(threads)

    # the headline comparison runs interleaved `repeat` times and keeps each one's fastest run: the
    # machine is shared, and the minimum is the least disturbed estimate
    plan_1 = STFT(p.n_fft, p.hop_length, p.win_length, workers=1)
    contenders = {"minriff on nnls": lambda: griffin_lim(mags["nnls"], plan, n_iter=p.num_griffin_lim_iters,
                                                         rng=Generator(0)),
                  "minriff on nnls, 1 thread": one_thread_gl}
    if librosa is not None:
        contenders["librosa on minriff nnls"] = lambda: lib_gl(mags["nnls"][0].T)
    repeat = getattr(args, "repeat", None) or (1 if quick else 3)
    best, waves = {k: float("inf") for k in contenders}, {}
    for _ in range(repeat):
        for name, fn in contenders.items():
            waves[name], t = _timed(fn)
            best[name] = min(best[name], t)
    gl_rows = []
    for name in contenders:
        sc_lin, sc_mel = quality(mags["nnls"], waves[name])
        gl_rows.append(row("griffin-lim 32", f"{name} (best of {repeat})", best[name], None, sc_lin, sc_mel))
    for name, mag in mags.items():
        if name != "nnls":
            wave, t = _timed(lambda mag=mag: griffin_lim(mag, plan, n_iter=p.num_griffin_lim_iters, rng=Generator(0)))
            gl_rows.append(row("griffin-lim 32", f"minriff on {name}", t, None, *quality(mag, wave)))
    wave, t = _timed(lambda: griffin_lim(mags["nnls"], plan, n_iter=p.num_griffin_lim_iters, phase_init="peaks"))
    gl_rows.append(row("griffin-lim 32", "minriff on nnls, peak-locked start", t, None, *quality(mags["nnls"], wave)))
    if librosa is not None and "librosa pinv" in mags:
        wave, t = _timed(lambda: lib_gl(mags["librosa pinv"][0].T))
        gl_rows.append(row("griffin-lim 32", "librosa on librosa pinv", t, None, *quality(mags["librosa pinv"], wave)))
    rows += gl_rows

    by = {r["impl"]: r["seconds"] for r in rows}
    mine, mine_1 = best["minriff on nnls"], best["minriff on nnls, 1 thread"]
    extra = {"input": f"512x512 image from {source}", "params": "n_fft 17640, win 4410, hop 441, 512 htk mels 0-10 kHz",
             "threads": f"minriff {numba.get_num_threads()} (numba) / all cores (scipy.fft); "
                        "librosa: numpy.fft, 1 thread"}
    if librosa is not None:
        lib = best["librosa on minriff nnls"]
        extra["griffin-lim speed-up, librosa / minriff (same magnitudes)"] = (
            f"{lib / mine:.2f}x ({lib / mine_1:.2f}x single-threaded)")
        if "librosa on librosa pinv" in by:
            whole = by["librosa pinv (nnls init)"] + lib
            extra["whole path, librosa pinv+gl / minriff nnls+gl"] = f"{whole / (by['minriff nnls'] + mine):.2f}x"
        lib_nnls = [k for k in by if k.startswith("librosa mel_to_stft")]
        if lib_nnls:
            extra["whole path, librosa mel_to_stft+gl / minriff nnls+gl (extrapolated)"] = \
                f"{(by[lib_nnls[0]] + lib) / (by['minriff nnls'] + mine):.0f}x"
    else:
        extra["librosa"] = "not installed: no baseline"
    emit(rows, getattr(args, "json", False), "bench audio: spectrogram image -> audio", extra)
    return 0


def _librosa():
    try:
        import librosa  # bench-only baseline

        return librosa
    except Exception:
        return None
