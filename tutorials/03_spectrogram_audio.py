"""Tutorial 3 — audio <-> spectrogram image, and why the way back is the hard part.

Riffusion's images are mel spectrograms: 512 rows of mel-spaced frequencies (0-10 kHz), one column
per 10 ms. Going from audio to an image throws away two things, and coming back has to guess them:

    audio ─ STFT ─> |X| (8821 bins) ─ mel filters ─> mel (512) ─ 8-bit mapping ─> image
    image ─> mel ─ inverse mel (8821 unknowns from 512 numbers) ─> |X| ─ Griffin-Lim (guess phases) ─> audio

We synthesise a chord with a deep bass note, make its image, then invert it with both inverse-mel
methods minriff offers: "nnls" (an exact non-negative least-squares solve, minriff's default) and
"sgd" (what the original Riffusion ran: 200 steps of gradient descent, which stops before the low
frequencies converge — reference/riffusion.md §1.6). The numbers show the original's bass loss.

Run:  python tutorials/03_spectrogram_audio.py   (about 20 s; writes into $MINRIFF_TUTORIAL_OUT or
      a temporary folder: chord.wav, chord.png, chord_nnls.wav, chord_sgd.wav)
"""
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from minriff.audio import io as audio
from minriff.audio import spectrogram
from minriff.audio.griffinlim import griffin_lim, spectral_convergence
from minriff.audio.invmel import inverse_mel
from minriff.audio.melscale import BandedFilterbank, hz_to_mel, mel_to_hz
from minriff.audio.stft import STFT
from minriff.rng import Generator

OUT = Path(os.environ.get("MINRIFF_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="minriff-tutorial-"))
OUT.mkdir(parents=True, exist_ok=True)
print(f"outputs go to {OUT}")
p = spectrogram.SpectrogramParams()  # the original's defaults
sr = p.sample_rate

# ------------------------------------------------------------------ 1. a chord in NumPy
# 511 hops of 10 ms = 5.11 s: exactly the 512-column image the model makes. An A-major chord
# (A3, C#4, E4, each with two overtones) over a low A1 bass at 55 Hz, fading out.
t = np.arange(511 * p.hop_length) / sr
notes = {55.0: 1.0, 220.0: 0.5, 277.18: 0.4, 329.63: 0.4}  # Hz: amplitude
wave = sum(a * np.sin(2 * np.pi * k * f * t) / k for f, a in notes.items() for k in (1, 2, 3))
wave = (0.5 * wave * np.exp(-0.4 * t) / np.max(np.abs(wave)))[None].astype(np.float32)  # (C=1, N)
audio.write_audio(OUT / "chord.wav", wave, sr)
print(f"1. chord: {wave.shape[1]} samples = {wave.shape[1] / sr:.2f} s at {sr} Hz -> chord.wav")

# ------------------------------------------------------------------ 2. audio -> mel
# STFT with a 100 ms Hann window (4410 samples) zero-padded to n_fft = 17640 (2.5 Hz per bin),
# hop 441 samples (10 ms); magnitude; then 512 triangular mel filters (HTK scale, 0-10 kHz).
mel = spectrogram.audio_to_mel(wave, p)  # (C, 512, frames)
edges = mel_to_hz(np.linspace(hz_to_mel(p.min_frequency), hz_to_mel(p.max_frequency), p.num_frequencies + 2))
centres = edges[1:-1]  # filter m peaks at centres[m]: 3.7 Hz apart at the bottom, 57 Hz at the top
rows = {f: p.num_frequencies - 1 - int(np.argmin(np.abs(centres - f))) for f in notes}  # after the flip below
print(f"2. n_fft {p.n_fft}, window {p.win_length}, hop {p.hop_length} -> mel {mel.shape}")
print(f"   filter centres {centres[0]:.1f}, {centres[1]:.1f} ... {centres[-1]:.0f} Hz; "
      f"image rows of the notes: {({f'{f:g} Hz': r for f, r in rows.items()})}")

# ------------------------------------------------------------------ 3. mel -> 8-bit image
# pixel = 255 - 255 · (mel / max)^0.25, truncated to uint8: loud = black, silence = white. The
# fourth root spreads 256 grey levels over a huge dynamic range. Then flip: row 0 = highest
# frequency, as a spectrogram is drawn. Mono images carry the same value in R, G and B.
image = spectrogram.audio_to_image(wave, p)  # PIL image, parameters + max value in its EXIF
spectrogram.save_image(image, OUT / "chord.png")
pixels = np.asarray(image)[:, :, 0]  # (512 rows, frames)
by_hand = (255 - 255 * (mel[0] / mel.max()) ** p.power_for_image).astype(np.uint8)[::-1]
mapping_ok = bool(np.array_equal(pixels, by_hand))
levels = {db: int(255 - 255 * 10 ** (db / 20 * p.power_for_image)) for db in (0, -20, -40, -60, -80)}
print(f"3. image {image.size[0]}x{image.size[1]} (W x H) -> chord.png; formula reproduces the pixels: {mapping_ok}")
print(f"   pixel value of a mel level N dB below the loudest: {levels}")
row_5k = p.num_frequencies - 1 - int(np.argmin(np.abs(centres - 5000)))
column_pixels = {"55 Hz": int(pixels[rows[55.0], 50]), "5 kHz": int(pixels[row_5k, 50])}
print(f"   column 50: pixel at the 55 Hz row {column_pixels['55 Hz']} (dark = loud), at 5 kHz {column_pixels['5 kHz']}")

# ------------------------------------------------------------------ 4. image -> mel -> linear magnitudes
# Back from pixels to mel amplitudes (undo flip, inversion and the 4th root; we restore the true
# scale from the EXIF max value so levels can be compared with the original chord).
max_value = image.getexif()[spectrogram.EXIF_MAX_VALUE]
mel_back = spectrogram.image_to_mel(image, p, max_value=max_value)  # (1, 512, frames)
# Inverse mel: find |X| (8821 bins per frame, only the 4000 bins below 10 kHz matter) with
# fb.T @ |X| = mel and |X| >= 0. Far fewer equations than unknowns: "nnls" returns the smallest
# such |X| exactly; "sgd" takes the original's 200 gradient steps from random values in [0, 1).
fb = spectrogram.filterbank(p)  # (8821, 512)
banded = BandedFilterbank.from_dense(fb)
used = banded.used_bins
bands = {"<130 Hz": (0, 32), "130-280 Hz": (32, 64), "0.28-0.7 kHz": (64, 128), "0.7-2 kHz": (128, 256),
         "2-10 kHz": (256, 512)}
plan = STFT(p.n_fft, p.hop_length, p.win_length)
true_mag = np.abs(plan.frames(wave * 32768.0))  # the original analysed int16-scale samples


def band_level_db(w, lo_hz, hi_hz):
    """Energy of waveform w between lo_hz and hi_hz relative to the original chord's, in dB."""
    def energy(x):
        spec = np.abs(np.fft.rfft(x[0])) ** 2
        f = np.fft.rfftfreq(x.shape[1], 1 / sr)
        return spec[(f >= lo_hz) & (f < hi_hz)].sum()
    return float(10 * np.log10(energy(w) / energy(wave)))


results = {}
print("4./5. inverse mel, then 32 Griffin-Lim iterations")
for method in ("nnls", "sgd"):
    rng = Generator(0)  # torch's CPU generator: the original's random draws for torch.manual_seed(0)
    mag = inverse_mel(mel_back, banded, method=method, rng=rng)  # (1, frames, 8821)
    mel_again = np.einsum("ctf,fm->cmt", mag[..., :used].astype(np.float64), fb[:used])
    mel_err = {name: float(mel_again[:, a:b].sum() / mel_back[:, a:b].sum() - 1) for name, (a, b) in bands.items()}
    # ------------------------------------------------------------------ 5. Griffin-Lim
    # Start from random phases; repeat: waveform = iSTFT(|X| · phase), phase = phase of STFT(waveform)
    # (with momentum 0.99, "fast Griffin-Lim"). The result's |STFT| approaches |X| but not exactly.
    rebuilt = griffin_lim(mag, plan, n_iter=p.num_griffin_lim_iters, rng=rng) / np.float32(32768)
    audio.write_audio(OUT / f"chord_{method}.wav", audio.loudness_riffusion(rebuilt), sr)
    results[method] = {
        "mel_rel_err": mel_err,
        "spectral_convergence": spectral_convergence(true_mag, rebuilt * 32768.0, plan),
        "bass_db": band_level_db(rebuilt, 40, 70),  # the 55 Hz note
        "mid_db": band_level_db(rebuilt, 200, 1000),  # the chord
    }
    print(f"   {method}: mel error per band " + ", ".join(f"{k} {v:+.1%}" for k, v in mel_err.items()))
    r = results[method]
    print(f"   {method}: spectral convergence vs the chord {r['spectral_convergence']:.2f}; "
          f"level vs the chord: 55 Hz bass {r['bass_db']:+.1f} dB, 200-1000 Hz {r['mid_db']:+.1f} dB "
          f"-> chord_{method}.wav")

# Reading the numbers: nnls fits every mel band (errors ~1e-7) and its audio keeps the chord's
# balance; sgd leaves the low bands short (about -25 % below 130 Hz at this 512-frame width; its
# step size shrinks as images get wider), so its audio has a weaker bass. Griffin-Lim only guesses
# the phase, so the spectral convergence (|STFT| misfit, 0 = perfect) is never 0. In one call, the
# whole way back is `spectrogram.image_to_audio(image, method="nnls" or "sgd")`, which also applies
# the original's loudness stage.
print("RESULT " + json.dumps({"image_size": list(image.size), "mapping_ok": mapping_ok, "pixel_levels": levels,
                              "column_pixels": column_pixels,
                              **results}))
