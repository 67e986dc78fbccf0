"""Spectrogram <-> image (reference/riffusion.md §1.1-1.5): params, filterbank, STFT, goldens, EXIF."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from minriff.audio import spectrogram as spg
from minriff.audio.melscale import BandedFilterbank, hz_to_mel, mel_to_hz, melscale_fbanks
from minriff.audio.spectrogram import SpectrogramParams
from minriff.audio.stft import STFT, istft, stft
from minriff.errors import AudioError, InputError
from support import FIXTURES, shared_file

AUDIO = FIXTURES / "audio"


@pytest.fixture(scope="module")
def oracle_npz():
    return dict(np.load(AUDIO / "oracle.npz"))


def _sparse(d, name, shape):
    fb = np.zeros(shape)
    fb[d[f"{name}_rows"], d[f"{name}_cols"]] = d[f"{name}_vals"]
    return fb


def test_params_defaults_and_derived_sizes():
    p = SpectrogramParams()
    assert (p.n_fft, p.win_length, p.hop_length) == (17640, 4410, 441)
    assert (p.num_frequencies, p.min_frequency, p.max_frequency, p.stereo) == (512, 0, 10000, False)
    assert (p.mel_scale_type, p.mel_scale_norm, p.power_for_image) == ("htk", None, 0.25)
    assert (p.max_mel_iters, p.num_griffin_lim_iters) == (200, 32)
    p20 = SpectrogramParams.riffusion_20k()
    assert (p20.min_frequency, p20.max_frequency, p20.stereo) == (10, 20000, True)
    # truncation, not rounding: 11 ms at 22.05 kHz is 242.55 samples
    assert SpectrogramParams(sample_rate=22050, step_size_ms=11).hop_length == 242


def test_frames_for_common_lengths():
    assert [spg.n_frames(int(ms * 44.1)) for ms in (5000, 5110, 5120, 5678)] == [501, 512, 513, 568]


def test_filterbank_equals_oracle(oracle_npz):
    """librosa.filters.mel is the oracle (torchaudio is not installed; same formulas)."""
    fb = melscale_fbanks(8821, 0, 10000, 512, 44100)
    np.testing.assert_allclose(fb, _sparse(oracle_npz, "fb_riff", fb.shape), rtol=0, atol=1e-6)
    fb20 = melscale_fbanks(8821, 10, 20000, 512, 44100)
    np.testing.assert_allclose(fb20, _sparse(oracle_npz, "fb_20k", fb20.shape), rtol=0, atol=1e-6)
    sl = melscale_fbanks(257, 20, 8000, 40, 16000, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(sl, oracle_npz["fb_slaney"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(melscale_fbanks(257, 50, 6000, 24, 16000), oracle_npz["fb_htk_small"], atol=1e-6)


def test_filterbank_facts():
    fb = melscale_fbanks(8821, 0, 10000, 512, 44100)
    assert np.all(fb.max(axis=0) > 0)  # no empty filter
    assert np.flatnonzero(fb.sum(axis=1)).max() == 3999  # only bins < 4000 carry weight
    assert np.isclose(hz_to_mel(10000.0), 3073.22, atol=0.01)
    banded = BandedFilterbank.from_dense(fb)
    assert banded.used_bins == 4000
    np.testing.assert_array_equal(banded.to_dense(), fb)
    assert ((fb > 0).sum(axis=1) <= 2).all()  # the tridiagonal structure the NNLS relies on


@given(st.sampled_from(["htk", "slaney"]), st.floats(0, 20000))
def test_mel_scale_inverse(scale, f):
    assert np.isclose(mel_to_hz(hz_to_mel(f, scale), scale), f, rtol=1e-9, atol=1e-9)


def test_bad_filterbank_args():
    with pytest.raises(InputError):
        melscale_fbanks(100, 0, 1000, 10, 8000, norm="area")
    with pytest.raises(InputError):
        melscale_fbanks(100, 500, 100, 10, 8000)
    with pytest.raises(InputError):
        hz_to_mel(1.0, "bark")


def test_stft_istft_equal_torch_fixture(oracle_npz):
    x = oracle_npz["stft_x"]
    X = stft(x, 512, 128, 300)
    ref = oracle_npz["stft_X"]
    assert X.shape == ref.shape
    np.testing.assert_allclose(X, ref, atol=1e-4 * np.abs(ref).max())
    y = istft(ref, 512, 128, 300)
    np.testing.assert_allclose(y, oracle_npz["istft_y"], atol=1e-5)


@settings(max_examples=25)
@given(st.data())
def test_stft_istft_reconstructs(data):
    win = data.draw(st.integers(8, 200), label="win")
    n_fft = data.draw(st.integers(win, 2 * win + 7), label="n_fft")
    hop = data.draw(st.integers(1, max(1, win // 4)), label="hop")
    n = data.draw(st.integers(n_fft, 4 * n_fft + 50), label="n")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    x = np.random.default_rng(seed).uniform(-1, 1, (2, n)).astype(np.float32)
    y = istft(stft(x, n_fft, hop, win), n_fft, hop, win)
    L = (1 + n // hop - 1) * hop
    assert y.shape == (2, L)
    np.testing.assert_allclose(y, x[:, :L], atol=1e-5)


def test_stft_rejects_too_short_signal():
    with pytest.raises(InputError):
        STFT(17640, 441, 4410).frames(np.zeros((1, 2000), np.float32))


def _compare_images(ours: Image.Image, ref: Image.Image):
    a, b = np.asarray(ours).astype(int), np.asarray(ref).astype(int)
    assert a.shape == b.shape
    diff = np.abs(a - b)
    return float((diff == 0).mean()), int(diff.max())


def _golden_wave():
    x, sr = sf.read(AUDIO / "golden_small.wav", dtype="float32", always_2d=True)
    assert sr == 44100
    return x.T


def test_self_made_golden_mono(oracle_npz):
    wave = _golden_wave()
    mel = spg.audio_to_mel(wave)
    np.testing.assert_allclose(mel, oracle_npz["mel_mono"], rtol=1e-4, atol=1e-4 * oracle_npz["mel_mono"].max())
    image = spg.audio_to_image(wave)
    same, worst = _compare_images(image, Image.open(AUDIO / "golden_small_mono.png"))
    assert same >= 0.999 and worst <= 1
    assert image.size == (101, 512)
    assert np.isclose(image.getexif()[spg.EXIF_MAX_VALUE], oracle_npz["mel_mono"].max(), rtol=1e-5)


def test_self_made_golden_stereo():
    image = spg.audio_to_image(_golden_wave(), SpectrogramParams(stereo=True))
    same, worst = _compare_images(image, Image.open(AUDIO / "golden_small_stereo.png"))
    assert same >= 0.999 and worst <= 1
    rgb = np.asarray(image)
    assert not rgb[..., 0].any() and (rgb[..., 1] != rgb[..., 2]).any()


def test_golden_clip_mono_png():
    """The original's own output (shared data): ≥ 99.9 % equal pixels, never more than 1 level off."""
    clip = shared_file("golden", "clip.wav")
    ref = Image.open(shared_file("golden", "clip_mono.png"))
    x, sr = sf.read(clip, dtype="float32", always_2d=True)
    image = spg.audio_to_image(x.T)
    same, worst = _compare_images(image, ref)
    assert same >= 0.999 and worst <= 1
    assert np.isclose(image.getexif()[spg.EXIF_MAX_VALUE], ref.getexif()[spg.EXIF_MAX_VALUE], rtol=1e-6)
    assert SpectrogramParams.from_exif(ref.getexif()) == SpectrogramParams()


def test_exif_written_to_png_and_read_back(tmp_path):
    p = SpectrogramParams.riffusion_20k(power_for_image=0.3)
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 8000)).astype(np.float32)
    image = spg.audio_to_image(wave, p)
    path = tmp_path / "s.png"
    spg.save_image(image, path)
    back = Image.open(path)
    exif = back.getexif()
    for tag in range(11000, 11090, 10):
        assert tag in exif
    assert exif[11005] == 1 and exif[11000] == 44100
    assert isinstance(exif[11070], float) and isinstance(exif[11080], float)
    assert spg.params_from_image(back) == p


def test_params_from_image_without_exif():
    mono = Image.new("RGB", (10, 512), (200, 200, 200))
    assert spg.params_from_image(mono) == SpectrogramParams()
    stereo = Image.fromarray(np.dstack([np.zeros((512, 10), np.uint8), np.full((512, 10), 90, np.uint8),
                                        np.full((512, 10), 120, np.uint8)]))
    assert spg.params_from_image(stereo).stereo


@settings(max_examples=30)
@given(st.integers(0, 2**31 - 1), st.integers(1, 2), st.sampled_from([0.25, 0.5, 1.0]))
def test_image_mel_round_trip_within_quantisation(seed, channels, power):
    rng = np.random.default_rng(seed)
    mel = rng.random((channels, 16, 12)) ** 3 * 1e6
    image, max_value = spg.mel_to_image(mel, power)
    p = SpectrogramParams(stereo=channels == 2, num_frequencies=16, power_for_image=power)
    back = spg.image_to_mel(image, p, max_value=max_value).astype(np.float64)
    # 8-bit truncation of 255 - 255 (mel/max)^power: the recovered power-domain value is at most
    # one level (1/255) above the true one and never below it
    delta = (back / max_value) ** power - (mel / max_value) ** power
    assert delta.min() >= -1e-5 and delta.max() <= 1 / 255 + 1e-5


def test_image_orientation_and_channels():
    mel = np.zeros((1, 512, 3))
    mel[0, 511, :] = 1.0  # top mel bin loudest
    image, _ = spg.mel_to_image(mel)
    rgb = np.asarray(image)
    assert (rgb[0] == 0).all() and (rgb[1:] == 255).all()  # row 0 = highest bin, loud = black
    grey = image.convert("L")
    assert (spg.image_to_mel(grey)[0, 511] == 30e6).all()  # palette/greyscale images convert to RGB


def test_audio_to_image_errors():
    with pytest.raises(AudioError):
        spg.audio_to_image(np.zeros((3, 10000), np.float32))
    with pytest.raises(AudioError):
        spg.audio_to_image(np.full((1, 10000), np.nan, np.float32))
