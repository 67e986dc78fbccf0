"""Audio files, resampling, the original's loudness stage and the audio CLI commands."""
from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from minriff.audio import io as audio
from minriff.cli import main
from minriff.errors import AudioError
from support import FIXTURES


def _tone(n=4410, sr=44100, f=440.0, channels=2):
    t = np.arange(n) / sr
    return np.stack([0.5 * np.sin(2 * np.pi * f * t * (c + 1)) for c in range(channels)]).astype(np.float32)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_lossless_round_trip_is_exact(tmp_path, suffix):
    x = np.round(_tone() * 32768) / 32768
    audio.write_audio(tmp_path / f"a{suffix}", x, 44100)
    y, sr = audio.read_audio(tmp_path / f"a{suffix}")
    assert sr == 44100 and y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("suffix", [".ogg", ".mp3"])
def test_lossy_round_trip(tmp_path, suffix):
    x = _tone(n=44100, channels=1)
    audio.write_audio(tmp_path / f"a{suffix}", x, 44100)
    y, sr = audio.read_audio(tmp_path / f"a{suffix}")
    assert sr == 44100 and y.shape[0] == 1 and abs(y.shape[1] - x.shape[1]) < 3000
    # same tone: strong peak at 440 Hz
    spec = np.abs(np.fft.rfft(y[0, :32768]))
    assert abs(np.argmax(spec) * 44100 / 32768 - 440) < 3


def test_read_errors(tmp_path):
    with pytest.raises(AudioError, match="no such"):
        audio.read_audio(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("not audio at all")
    with pytest.raises(AudioError, match="not a readable"):
        audio.read_audio(tmp_path / "text.wav")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.int16), 44100)
    with pytest.raises(AudioError, match="no audio samples"):
        audio.read_audio(tmp_path / "empty.wav")
    audio.write_audio(tmp_path / "long.wav", _tone(n=44100), 44100)
    with pytest.raises(AudioError, match="limit"):
        audio.read_audio(tmp_path / "long.wav", max_seconds=0.5)


def test_write_errors(tmp_path):
    with pytest.raises(AudioError, match="unsupported"):
        audio.write_audio(tmp_path / "a.xyz", _tone(), 44100)
    with pytest.raises(AudioError):
        audio.write_audio(tmp_path / "a.wav", np.full((1, 10), np.nan), 44100)
    with pytest.raises(AudioError):
        audio.write_audio(tmp_path / "a.wav", np.zeros((1, 0)), 44100)


def test_to_int16_rounds_and_saturates():
    np.testing.assert_array_equal(audio.to_int16(np.array([1.5, -1.5, 0.5 / 32768, 1 / 32768])),
                                  [32767, -32768, 0, 1])


def test_resample_to_model_rate(tmp_path):
    sf.write(tmp_path / "low.wav", _tone(n=22050, sr=22050, f=1000, channels=1).T, 22050)
    y = audio.load_audio(tmp_path / "low.wav", 44100)
    assert y.shape == (1, 44100)
    spec = np.abs(np.fft.rfft(y[0]))
    assert abs(np.argmax(spec) - 1000) <= 1  # 1 Hz bins over one second


def test_peak_normalize():
    x = _tone() * 0.1
    y = audio.peak_normalize(x)
    assert np.isclose(np.abs(y).max(), 10 ** (-0.1 / 20), rtol=1e-6)
    assert not audio.peak_normalize(np.zeros((1, 5))).any()


def _audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            pytest.skip("audioop (Python < 3.13) is the oracle for pydub's integer arithmetic")


def _pydub_like_reference(wave):
    """riffusion.md §1.8 spelled out with the real audioop functions pydub calls."""
    ao = _audioop()
    w = wave.astype(np.float32)
    samples = (w * (np.float32(32767) / np.max(np.abs(w)))).T.astype(np.int16)  # (N, C) interleaved
    data = samples.tobytes()
    rms = ao.rms(data, 2)
    gain_db = -12 - 20 * np.log10(rms / 32768)
    data = ao.mul(data, 2, 10 ** (float(gain_db) / 20))
    peak = ao.max(data, 2)
    boost = 20 * np.log10(32768 * 10 ** (-0.1 / 20) / peak)
    data = ao.mul(data, 2, 10 ** (float(boost) / 20))
    return np.frombuffer(data, np.int16).reshape(-1, wave.shape[0]).T


@settings(max_examples=25)
@given(st.integers(0, 2**31 - 1), st.floats(0.5, 30.0), st.integers(1, 2))
def test_loudness_riffusion_equals_audioop(seed, crest, channels):
    rng = np.random.default_rng(seed)
    wave = rng.standard_normal((channels, 3000)) * 1e6
    wave[:, rng.integers(0, 3000, 3)] *= crest  # vary the crest factor, so clipping sometimes happens
    ours = audio.riffusion_int16(wave)
    np.testing.assert_array_equal(ours, _pydub_like_reference(wave))
    f = audio.loudness_riffusion(wave)
    np.testing.assert_array_equal(np.rint(f * 32768).astype(np.int16), ours)


def test_loudness_of_silence():
    assert not audio.loudness_riffusion(np.zeros((1, 100))).any()


# --- CLI --------------------------------------------------------------------------------------

def test_cli_audio_to_image_to_audio(tmp_path, capsys):
    wav = FIXTURES / "audio" / "golden_small.wav"
    png = tmp_path / "g.png"
    assert main(["audio2image", str(wav), "-o", str(png), "--stereo"]) == 0
    image = Image.open(png)
    assert image.size == (101, 512) and image.getexif()[11005] == 1
    out = tmp_path / "g.flac"
    assert main(["image2audio", str(png), "-o", str(out), "--iters", "2", "--quiet"]) == 0
    y, sr = audio.read_audio(out)
    assert sr == 44100 and y.shape == (2, 100 * 441)
    err = capsys.readouterr()
    assert "wrote" in err.out.splitlines()[0] and err.err == ""


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    assert main(["image2audio", str(bad), "-o", str(tmp_path / "x.wav")]) == 2
    assert main(["audio2image", str(tmp_path / "none.wav")]) == 2
    assert main(["audio2image", str(FIXTURES / "audio" / "golden_small.wav"), "-o", str(tmp_path / "x.jpg")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("minriff ") and "error:" in line for line in lines)
