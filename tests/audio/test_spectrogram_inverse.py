"""Image -> audio: exact NNLS and the original's SGD inverse mel, Griffin-Lim, image_to_audio."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from minriff.audio import spectrogram as spg
from minriff.audio.griffinlim import griffin_lim, initial_angles
from minriff.audio.invmel import inverse_mel, nnls, sgd
from minriff.audio.melscale import BandedFilterbank, melscale_fbanks
from minriff.audio.spectrogram import SpectrogramParams
from minriff.audio.stft import STFT
from minriff.errors import AudioError, InputError
from support import FIXTURES, oracle

AUDIO = FIXTURES / "audio"
RIFF_FB = melscale_fbanks(8821, 0, 10000, 512, 44100)
RIFF_BANDED = BandedFilterbank.from_dense(RIFF_FB)


@pytest.fixture(scope="module")
def oracle_npz():
    return dict(np.load(AUDIO / "oracle.npz"))


@settings(max_examples=20)
@given(st.integers(0, 2**31 - 1), st.floats(0.01, 1.0), st.integers(1, 12))
def test_nnls_reproduces_mel_of_nonnegative_spectra(seed, density, frames):
    """Any mel that some non-negative spectrum produces is reproduced to 1e-4 relative."""
    rng = np.random.default_rng(seed)
    x0 = rng.random((frames, 4000)) * (rng.random((frames, 4000)) < density) * 10.0 ** rng.uniform(-3, 8)
    mel = x0 @ RIFF_FB[:4000]
    x, _ = nnls(mel, RIFF_BANDED)
    assert (x >= 0).all()
    rec = x @ RIFF_FB[:4000]
    for m, r in zip(mel, rec):
        assert np.linalg.norm(r - m) <= 1e-4 * np.linalg.norm(m) + 1e-300


@settings(max_examples=15)
@given(st.integers(0, 2**31 - 1), st.integers(8, 40), st.sampled_from([(256, 8000), (512, 16000), (1024, 22050)]),
       st.sampled_from([("htk", None), ("slaney", "slaney")]))
def test_nnls_is_optimal_against_scipy(seed, n_mels, fft_sr, scale_norm):
    """Arbitrary non-negative targets (outside the reachable cone): our residual equals the
    Lawson-Hanson optimum of scipy.optimize.nnls."""
    n_fft, sr = fft_sr
    fb = melscale_fbanks(n_fft // 2 + 1, 0, sr / 2 * 0.8, n_mels, sr, norm=scale_norm[1], mel_scale=scale_norm[0])
    banded = BandedFilterbank.from_dense(fb)
    U = banded.used_bins
    m = np.random.default_rng(seed).random((3, n_mels)) * 5
    x, _ = nnls(m, banded)
    for i in range(3):
        _, best = scipy.optimize.nnls(fb[:U].T, m[i])
        ours = np.linalg.norm(x[i] @ fb[:U] - m[i])
        assert ours <= best * (1 + 1e-5) + 1e-6 * np.linalg.norm(m[i])  # eps-regularisation bias ~1e-7


def test_nnls_on_real_image_converges_fast():
    mel = spg.image_to_mel(Image.open(AUDIO / "golden_small_mono.png"))[0].T
    x, iters = nnls(mel.astype(np.float64), RIFF_BANDED)
    rec = x @ RIFF_FB[:4000]
    assert np.linalg.norm(rec - mel) <= 1e-4 * np.linalg.norm(mel)
    assert iters.max() <= 20


def test_nnls_rejects_negative_input():
    with pytest.raises(InputError):
        nnls(-np.ones((1, 512)), RIFF_BANDED)


def _numpy_sgd(mel, fb, init, n_iter):
    """Plain NumPy restatement of torchaudio<=2.0 InverseMelScale (dense, float64)."""
    B, M, T = mel.shape
    melspec = mel.transpose(0, 2, 1).astype(np.float64)
    L = init.astype(np.float64).copy()
    buf = None
    for _ in range(n_iter):
        diff = melspec - L @ fb
        grad = -2.0 / (B * T) * diff @ fb.T
        buf = grad if buf is None else 0.9 * buf + grad
        L = np.maximum(L - 0.1 * buf, 0)
    return L.transpose(0, 2, 1)


def test_sgd_matches_numpy_restatement():
    fb = melscale_fbanks(257, 50, 6000, 24, 16000)
    rng = np.random.default_rng(3)
    mel = (rng.random((2, 257, 5)).transpose(0, 2, 1) @ fb).transpose(0, 2, 1) * 50
    init = rng.random((2, 5, 257)).astype(np.float32)
    ref = _numpy_sgd(mel, fb, init, 30)
    ours = sgd(mel.transpose(0, 2, 1).reshape(10, 24), BandedFilterbank.from_dense(fb), init.reshape(10, 257).copy(),
               max_iter=30).reshape(2, 5, 257).transpose(0, 2, 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_sgd_matches_torch_fixture(oracle_npz):
    fb = BandedFilterbank.from_dense(oracle_npz["fb_htk_small"])
    mel, init = oracle_npz["sgd_mel"], oracle_npz["sgd_init"]
    B, M, T = mel.shape
    ours = sgd(mel.transpose(0, 2, 1).reshape(B * T, M), fb, init.reshape(B * T, -1).copy())
    ours = ours.reshape(B, T, -1).transpose(0, 2, 1)
    ref = oracle_npz["sgd_out"]
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3 * ref.max())


def test_sgd_leaves_unused_bins_at_their_init():
    mel = np.random.default_rng(0).random((1, 512, 3)) * 1e6
    mag = inverse_mel(mel, RIFF_BANDED, "sgd", rng=np.random.default_rng(5), max_iter=3)
    init = np.random.default_rng(5).random((3, 8821), dtype=np.float32)
    np.testing.assert_array_equal(mag[0, :, 4000:], init[:, 4000:])


def test_griffin_lim_matches_torch_fixture(oracle_npz):
    plan = STFT(512, 128, 300)
    mag = np.ascontiguousarray(oracle_npz["gl_mag"].transpose(0, 2, 1))
    ang = np.ascontiguousarray(oracle_npz["gl_angles"].transpose(0, 2, 1))
    y = griffin_lim(mag, plan, n_iter=6, angles=ang)
    ref = oracle_npz["gl_out"]
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-4 * np.abs(ref).max())


def test_initial_angles_are_complex_uniform():
    a = initial_angles(np.random.default_rng(0), 1, 50, 40)
    assert a.dtype == np.complex64 and a.shape == (1, 50, 40)
    assert 0 <= a.real.min() and a.real.max() < 1 and 0 <= a.imag.min() and a.imag.max() < 1
    assert abs(a.real.mean() - 0.5) < 0.02


def test_griffin_lim_improves_consistency():
    plan = STFT(1024, 128, 512)
    t = np.arange(20000) / 16000
    x = np.sin(2 * np.pi * 440 * t)[None].astype(np.float32)
    mag = np.abs(plan.frames(x))
    from minriff.audio.griffinlim import spectral_convergence

    sc = [spectral_convergence(mag, griffin_lim(mag, plan, n_iter=n, rng=np.random.default_rng(1)), plan)
          for n in (0, 4, 32)]
    assert sc[2] < sc[1] < sc[0]


@pytest.mark.parametrize("method", ["nnls", "sgd"])
def test_image_to_audio_shapes(method):
    image = Image.open(AUDIO / "golden_small_mono.png")
    w = spg.image_to_audio(image, method=method, n_iter=2, seed=1)
    assert w.shape == (1, (image.width - 1) * 441) and w.dtype == np.float32
    assert 0.98 < np.abs(w).max() <= 1.0  # loudness stage: peak at -0.1 dBFS
    again = spg.image_to_audio(image, method=method, n_iter=2, seed=1)
    np.testing.assert_array_equal(w, again)  # seeded


def test_image_to_audio_stereo_and_defaults():
    image = Image.open(AUDIO / "golden_small_stereo.png")  # no EXIF: stereo guessed from R = 0
    w = spg.image_to_audio(image, n_iter=1, loudness="peak")
    assert w.shape == (2, 100 * 441)
    assert np.isclose(np.abs(w).max(), 10 ** (-0.1 / 20), rtol=1e-6)
    assert not np.allclose(w[0], w[1])


def test_image_to_audio_errors():
    with pytest.raises(AudioError):
        spg.image_to_audio(Image.new("RGB", (20, 100)))  # height is not 512
    with pytest.raises(AudioError):
        spg.image_to_audio(Image.new("RGB", (3, 512)))  # too narrow for a Griffin-Lim frame
    with pytest.raises(InputError):
        spg.image_to_audio(Image.new("RGB", (20, 512)), method="adam")
    with pytest.raises(InputError):
        spg.image_to_audio(Image.new("RGB", (20, 512)), loudness="loud")
    with pytest.raises(InputError):
        spg.image_to_audio("not an image")


@pytest.mark.oracle
def test_griffin_lim_live_against_torch():
    torch = oracle("torch")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 6000)).astype(np.float32)
    plan = STFT(1024, 160, 640)
    mag = np.abs(plan.frames(x))
    ang = initial_angles(rng, *mag.shape)
    ours = griffin_lim(mag, plan, n_iter=5, angles=ang)
    w = torch.hann_window(640)
    S = torch.from_numpy(mag.transpose(0, 2, 1).copy())
    a = torch.from_numpy(ang.transpose(0, 2, 1).copy())
    prev = torch.tensor(0.0)
    for _ in range(5):
        rebuilt = torch.stft(torch.istft(S * a, 1024, 160, 640, w), 1024, 160, 640, w, center=True,
                             pad_mode="reflect", return_complex=True)
        a = rebuilt - prev.mul_(0.99 / 1.99)
        a = a.div(a.abs().add(1e-16))
        prev = rebuilt
    ref = torch.istft(S * a, 1024, 160, 640, w).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max())


@pytest.mark.oracle
def test_stft_live_against_torch_riffusion_size():
    torch = oracle("torch")
    x = np.random.default_rng(2).uniform(-20000, 20000, (1, 30000)).astype(np.float32)
    ref = torch.stft(torch.from_numpy(x), 17640, 441, 4410, torch.hann_window(4410), center=True,
                     pad_mode="reflect", return_complex=True).numpy()
    ours = spg._plan(SpectrogramParams())[0].frames(x).transpose(0, 2, 1)
    np.testing.assert_allclose(ours, ref, atol=2e-6 * np.abs(ref).max())


def test_peak_locked_start_beats_random_start():
    from minriff.audio.griffinlim import spectral_convergence
    from minriff.audio.phaseinit import peak_locked_phase

    plan = STFT(2048, 128, 512)
    t = np.arange(30000) / 16000
    x = (np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 1234.5 * t + 1.0))[None].astype(np.float32)
    mag = np.abs(plan.frames(x))
    ang = peak_locked_phase(mag, plan.hop, plan.n_fft)
    assert ang.shape == mag.shape and np.allclose(np.abs(ang), 1, atol=1e-6)
    np.testing.assert_array_equal(ang, peak_locked_phase(mag, plan.hop, plan.n_fft))  # deterministic
    peaks = spectral_convergence(mag, griffin_lim(mag, plan, n_iter=0, phase_init="peaks"), plan)
    rand = spectral_convergence(mag, griffin_lim(mag, plan, n_iter=0, rng=np.random.default_rng(0)), plan)
    assert peaks < 0.2 < 0.8 < rand
    with pytest.raises(InputError):
        griffin_lim(mag, plan, n_iter=0, phase_init="zeros")


@pytest.mark.oracle
def test_random_streams_follow_torch_generator():
    """image_to_audio draws like the original under torch.manual_seed: SGD init, then GL phases."""
    torch = oracle("torch")
    from minriff.audio.invmel import uniform
    from minriff.rng import Generator

    g = Generator(42)
    init = uniform(g, (2 * 3, 20))
    ang = initial_angles(g, 2, 3, 20)
    torch.manual_seed(42)
    ref_init = torch.rand(2, 3, 20).numpy()
    ref_ang = torch.rand((2, 20, 3), dtype=torch.complex64).numpy().transpose(0, 2, 1)
    np.testing.assert_array_equal(init.reshape(2, 3, 20), ref_init)
    np.testing.assert_array_equal(ang, ref_ang)


def test_sgd_attenuates_bass_like_the_original():
    """riffusion.md §1.6 [derived]: on the golden image the original's 200-step SGD leaves the mel
    at -31 % (bins 0-31), -24 % (32-63), -16 % (64-127), -5 % (128-255), ~0 % (384-511); the
    NNLS inverse reproduces every band."""
    from minriff.rng import Generator
    from support import shared_file

    mel = spg.image_to_mel(Image.open(shared_file("golden", "clip_mono.png")))
    expected = {(0, 32): -0.31, (32, 64): -0.24, (64, 128): -0.16, (128, 256): -0.05, (384, 512): 0.0}
    for method, tol in (("sgd", 0.03), ("nnls", 1e-4)):
        mag = inverse_mel(mel, RIFF_BANDED, method, rng=Generator(0))
        rec = (mag[0, :, :4000].astype(np.float64) @ RIFF_FB[:4000]).T
        for (lo, hi), change in expected.items():
            got = rec[lo:hi].sum() / mel[0, lo:hi].astype(np.float64).sum() - 1
            assert abs(got - (change if method == "sgd" else 0.0)) <= tol, (method, lo, hi, got)
