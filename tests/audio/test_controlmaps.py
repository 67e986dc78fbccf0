"""Control images from music (minriff.audio.controlmaps, musicmaps): onsets of a click track,
the contour of a sine sweep (against the mel formula written here), silence, the sources (audio as
`minriff audio2image` makes it, PNGs), widths, hostile inputs and properties of every map."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from minriff.audio import musicmaps
from minriff.audio.controlmaps import MAX_WIDTH, PREPROCESSORS, control_image, load_spectrogram
from minriff.audio.spectrogram import SpectrogramParams, audio_to_image, save_image
from minriff.errors import AudioError, InputError
from minriff.images import rgb8
from support import shared_file
from support.hostile import png_bytes, wav_bytes

SR = 44100
COLUMNS_PER_SECOND = 100  # Riffusion: one column per 10 ms step


def spectrogram(wave: np.ndarray) -> np.ndarray:
    return rgb8(audio_to_image(np.asarray(wave, np.float32)[None]))


def click_track(times: list[float], seconds: float = 5.11, seed: int = 0) -> np.ndarray:
    """Short broadband clicks (5 ms noise bursts, Hann-shaped) at `times` over faint noise."""
    rng = np.random.default_rng(seed)
    wave = rng.standard_normal(int(seconds * SR)) * 1e-4
    n = int(0.005 * SR)
    for t in times:
        s = int(round(t * SR))
        wave[s:s + n] += 0.7 * np.hanning(n) * rng.standard_normal(n)
    return wave


def sweep(f0: float, f1: float, seconds: float = 5.11) -> tuple[np.ndarray, callable]:
    """An exponential sine sweep f0 -> f1 Hz and its frequency as a function of time."""
    t = np.arange(int(seconds * SR)) / SR
    k = math.log(f1 / f0) / seconds
    wave = 0.5 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    return wave, lambda s: f0 * np.exp(k * s)


def expected_row(freq, n: int = 512, fmin: float = 0.0, fmax: float = 10000.0):
    """The image row of the HTK mel filter centred on `freq`: centres sit at mel(fmin) + (k + 1) *
    (mel(fmax) - mel(fmin)) / (n + 1) for bin k, and row 0 is the top bin (k = n - 1)."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)
    k = (mel(freq) - mel(fmin)) / ((mel(fmax) - mel(fmin)) / (n + 1)) - 1
    return n - 1 - k


@pytest.mark.parametrize("times", [[0.3, 0.8, 1.25, 1.9, 2.5, 3.05, 3.6, 4.4],
                                   [0.503, 1.007, 1.512, 2.018, 2.521, 3.026, 3.534, 4.037, 4.545],  # ~119 BPM
                                   [0.2, 0.32, 0.44, 2.0, 4.9]])
def test_click_track_onsets_sit_on_the_clicks(times):
    image = spectrogram(click_track(times))
    onsets = musicmaps.onset_columns(image)
    expected = np.array(times) * COLUMNS_PER_SECOND
    assert len(onsets) == len(times), (onsets, expected)
    assert np.abs(onsets - expected).max() <= 1.0, (onsets, expected)
    lines = PREPROCESSORS["rhythm"](image)
    assert lines.shape == (512, 512, 3)
    lit = np.flatnonzero(lines[:, :, 0].all(axis=0))  # full-height white columns
    assert not lines[:, :, 0][:, np.setdiff1d(np.arange(512), lit)].any()  # nothing else is white
    for c in np.round(expected).astype(int):  # a line on (or next to) every click, none far from one
        assert np.abs(lit - c).min() <= 1
    assert all(np.abs(expected - c).min() <= 2.5 for c in lit)


def test_click_onsets_come_half_a_window_early_with_a_lag_of_one_column():
    # why the default lag is half a window: the column-to-column increase peaks where the centred
    # 100 ms window first reaches the click, ~5 columns before it
    times = [0.5, 1.5, 2.5, 3.5]
    early = musicmaps.onset_columns(spectrogram(click_track(times)), lag=1)
    assert len(early) == 4
    shift = np.array(times) * COLUMNS_PER_SECOND - early
    assert np.all((3 <= shift) & (shift <= 5)), shift


@pytest.mark.parametrize("f0, f1", [(150.0, 1500.0), (300.0, 1900.0)])
def test_sine_sweep_gives_a_rising_contour_on_its_mel_rows(f0, f1):
    wave, freq = sweep(f0, f1)
    image = spectrogram(wave)
    rows = musicmaps.pitch_rows(image)
    cols = np.arange(image.shape[1])
    voiced = rows >= 0
    assert voiced.all()
    r = rows[voiced]
    # rising pitch = rows moving up, except in the first and last half window (5 columns), whose
    # frames reach into the STFT's reflect padding
    assert np.all(np.diff(r[5:-5]) <= 0)
    assert r[0] - r[-1] > 100
    want = expected_row(freq(cols[voiced] / COLUMNS_PER_SECOND))
    assert np.abs(r - want)[3:-3].max() <= 1.5  # inside: within the nearest filter
    assert np.abs(r - want).max() <= 3.0  # the ends: reflect-padded frames, smoothing window cut
    line = PREPROCESSORS["melody"](image)[:, :, 0] > 0
    for c in range(0, image.shape[1], 7):  # the drawn line covers the contour at every column
        assert line[int(round(want[c])) - 2:int(round(want[c])) + 3, c].any()
    assert line.sum(axis=0).max() <= 3 + abs(np.diff(r)).max() + 2  # a thin line, not a blob
    rows_lit = [np.flatnonzero(line[:, c]) for c in range(line.shape[1])]
    for a, b in zip(rows_lit, rows_lit[1:]):  # connected: each column's run touches the next one's
        assert a.size and b.size and a.min() <= b.max() + 1 and b.min() <= a.max() + 1


def test_melody_range_and_voicing():
    wave, _ = sweep(150.0, 1500.0)
    image = spectrogram(wave)
    rows = musicmaps.pitch_rows(image, fmin=400, fmax=800)
    voiced = rows >= 0
    assert 0 < voiced.sum() < 0.6 * rows.size  # outside 400-800 Hz the strongest in-range row is 30 dB down
    assert np.all(rows[voiced] <= expected_row(400) + 1) and np.all(rows[voiced] >= expected_row(800) - 1)
    with pytest.raises(InputError, match="melody range"):
        musicmaps.pitch_rows(image, fmin=800, fmax=400)
    with pytest.raises(InputError, match="outside"):
        musicmaps.pitch_rows(image, fmin=20000, fmax=30000)


def test_half_silent_sweep_leaves_the_silent_columns_black():
    wave, _ = sweep(200.0, 800.0)
    wave[: len(wave) // 2] = 0.0
    rows = musicmaps.pitch_rows(spectrogram(wave))
    assert (rows[:240] == -1).all() and (rows[265:] >= 0).all()


@pytest.mark.parametrize("prep", sorted(PREPROCESSORS))
def test_silence_gives_an_empty_map(prep):
    white = np.full((512, 300, 3), 255, np.uint8)  # Riffusion's silence: every pixel white
    out = PREPROCESSORS[prep](white)
    assert out.shape == (512, 300, 3) and out.dtype == np.uint8 and not out.any()
    quiet = spectrogram(np.random.default_rng(0).standard_normal(SR) * 1e-9)  # noise at -180 dB
    assert not PREPROCESSORS["rhythm"](np.maximum(quiet, 254)).any()  # one grey level of flicker: no onsets


def test_silent_audio_is_an_error_naming_it(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(SR * 2, np.float32), SR)
    for prep in PREPROCESSORS:
        with pytest.raises(AudioError, match="silent"):
            control_image(prep, path)


def test_audio_source_is_the_audio2image_spectrogram(tmp_path):
    wav, png = tmp_path / "clip.wav", tmp_path / "clip.png"
    wave = 0.5 * click_track([0.5, 1.0, 1.5, 2.5, 3.0], seconds=4.0) + 0.3 * sweep(200.0, 900.0, 4.0)[0]
    sf.write(wav, wave.astype(np.float32), SR, subtype="FLOAT")
    from minriff.cli import main

    assert main(["audio2image", str(wav), "-o", str(png), "--quiet"]) == 0
    spec, params = load_spectrogram(wav)
    np.testing.assert_array_equal(spec, np.asarray(Image.open(png).convert("RGB")))
    assert params == SpectrogramParams()
    for prep, fn in PREPROCESSORS.items():
        from_wav, from_png = control_image(prep, wav), control_image(prep, png)
        np.testing.assert_array_equal(from_wav, from_png)
        assert from_wav.shape == (512, 512, 3)
        width = spec.shape[1]  # 401 columns of music, then black padding to 512
        np.testing.assert_array_equal(from_wav[:, :width], fn(spec))
        assert not from_wav[:, width:].any()


def test_width_crops_and_pads(tmp_path):
    png = tmp_path / "long.png"
    save_image(audio_to_image(click_track([0.5, 2.0, 6.5], seconds=8.0)[None].astype(np.float32)), png)
    assert control_image("rhythm", png).shape == (512, 512, 3)
    wide = control_image("rhythm", png, width=1000)
    assert wide.shape == (512, 1000, 3)
    lit = np.flatnonzero(wide[0, :, 0])
    assert lit.max() > 640 and not wide[:, 802:].any()  # 8 s = 801 columns, then black
    first = load_spectrogram(png)[0][:, :64]  # the map of the crop, not a crop of the map
    np.testing.assert_array_equal(control_image("canny", png, 64), PREPROCESSORS["canny"](first))


def test_png_exif_parameters_are_used(tmp_path):
    # a 256-bin image from 0-5 kHz: the melody map reads rows with these parameters, not the defaults
    p = SpectrogramParams(num_frequencies=256, max_frequency=5000)
    wave, _ = sweep(300.0, 1200.0, 3.0)
    png = tmp_path / "small.png"
    save_image(audio_to_image(wave[None].astype(np.float32), p), png)
    spec, params = load_spectrogram(png)
    assert params == p and spec.shape[0] == 256
    out = control_image("melody", png, width=300)
    rows = musicmaps.pitch_rows(spec[:, :300], params=p)
    want = expected_row(300.0 * 4 ** (np.arange(300) / 300), n=256, fmax=5000)
    assert np.abs(rows[5:-5] - want[5:-5]).max() <= 1.5
    assert out[int(round(want[150])), 150, 0] == 255


def test_real_clip():
    """The golden clip (../shared/reference/golden): its audio gives the same maps as the original
    Riffusion's own image of it (minriff's audio2image reproduces that image), and its beat comes out
    as a steady grid of onsets."""
    wav, png = shared_file("golden", "clip.wav"), shared_file("golden", "clip_mono.png")
    for prep in PREPROCESSORS:
        a, b = control_image(prep, wav), control_image(prep, png)
        assert a.shape == (512, 512, 3) and a.any()
        np.testing.assert_array_equal(a, b)
    onsets = musicmaps.onset_columns(load_spectrogram(png)[0][:, :512])
    gaps = np.diff(onsets)
    assert len(onsets) >= 16 and gaps.max() - gaps.min() <= 3, onsets  # ~every 215 ms here


@pytest.mark.parametrize("prep", sorted(PREPROCESSORS))
@settings(max_examples=15, deadline=None)
@given(image=st.one_of(hnp.arrays(np.uint8, st.tuples(st.integers(8, 80), st.integers(1, 60))),
                       hnp.arrays(np.uint8, st.tuples(st.integers(8, 80), st.integers(1, 60), st.just(3)))))
def test_every_map_is_binary_white_on_black(prep, image):
    out = PREPROCESSORS[prep](image)
    assert out.shape == image.shape[:2] + (3,) and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 255}
    assert (out == out[:, :, :1]).all()
    if prep == "rhythm":
        assert (out == out[:1]).all()  # whole columns only
    if prep == "melody":
        lit = out[:, :, 0] > 0
        assert not lit[:, ~lit.any(axis=0)].any()
        grey = image if image.ndim == 2 else image[:, :, 0]
        np.testing.assert_array_equal(out, PREPROCESSORS[prep](np.repeat(grey[:, :, None], 3, axis=2)))


@settings(max_examples=20, deadline=None)
@given(image=hnp.arrays(np.uint8, st.tuples(st.integers(8, 60), st.integers(2, 60))), k=st.integers(1, 30),
       lag=st.integers(1, 8))
def test_flux_is_causal_and_onsets_shift_with_the_music(image, k, lag):
    # the flux of a column depends on it and earlier columns only: music appended on the right
    # leaves it alone; a copy of a column block `lag` columns later raises nothing where it repeats
    e = musicmaps.energy(image)
    longer = np.concatenate([image, np.random.default_rng(k).integers(0, 256, (image.shape[0], k), np.uint8)], axis=1)
    w = image.shape[1]
    np.testing.assert_array_equal(musicmaps.spectral_flux(musicmaps.energy(longer), lag)[:w],
                                  musicmaps.spectral_flux(e, lag))
    flux = musicmaps.spectral_flux(e, lag)
    assert flux[0] == 0 and (flux >= 0).all() and (flux <= 1).all()
    still = np.repeat(image[:, :1], w, axis=1)  # a sound held still: no increase, no onset
    assert not musicmaps.spectral_flux(musicmaps.energy(still), lag).any()
    assert musicmaps.onset_columns(still).size == 0


def test_stereo_images_read_both_channels():
    wave, _ = sweep(200.0, 800.0, 2.0)
    mono = spectrogram(wave)
    stereo = mono.copy()
    stereo[:, :, 0] = 0  # R = 0: minriff's stereo layout (G = left, B = right)
    stereo[:, :, 2] = 255  # right channel silent
    e = musicmaps.energy(stereo)
    np.testing.assert_allclose(e, musicmaps.energy(mono) / 2)
    np.testing.assert_array_equal(musicmaps.pitch_rows(stereo), musicmaps.pitch_rows(mono))


@pytest.mark.parametrize("prep", ["sobel", "", "CANNY", None])
def test_unknown_preprocessor(prep, tmp_path):
    with pytest.raises(InputError, match="unknown control preprocessor"):
        control_image(prep, tmp_path / "missing.wav")


@pytest.mark.parametrize("width", [0, -5, MAX_WIDTH + 1, 10**12, 51.2, "512", True])
def test_absurd_widths(width, tmp_path):
    with pytest.raises(InputError, match="width"):
        control_image("canny", tmp_path / "missing.wav", width)


def test_hostile_sources(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 100)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    tiny = tmp_path / "tiny.wav"
    sf.write(tiny, np.full(100, 0.5, np.float32), SR)
    fake_png = tmp_path / "fake.png"
    fake_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    huge_png = tmp_path / "huge.png"
    Image.new("L", (4, 2000)).save(huge_png)  # 2000 px high: over the 1024 mel-bin limit
    wide_png = tmp_path / "wide.png"  # declares 10^7 x 512 px in its header: refused before decoding
    wide_png.write_bytes(png_bytes(np.zeros((2, 2), np.uint8), 8, 0, declared=(10**7, 512)))
    low_rate = tmp_path / "low.wav"  # 1 Hz: a few samples would become hours of upsampled audio
    low_rate.write_bytes(wav_bytes(np.zeros((10, 1)), 1, "s16"))
    for path, error, words in [(text, AudioError, "cannot read"), (empty, AudioError, "no audio samples"),
                               (tiny, AudioError, "too short"), (fake_png, AudioError, "cannot read"),
                               (huge_png, AudioError, "limit"), (wide_png, AudioError, "limit"),
                               (low_rate, AudioError, "sampled at 1 Hz"),
                               (tmp_path / "missing.mp3", InputError, "cannot read"),
                               (tmp_path, InputError, "cannot read")]:
        with pytest.raises(error, match=words):
            control_image("melody", path)


def test_width_limit_is_the_longest_clip():
    from minriff import inputs

    assert MAX_WIDTH == inputs.MAX_IMAGE_WIDTH  # audio may not import inputs: the number is repeated
