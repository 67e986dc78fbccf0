"""audio/seamless.py: clips of one spectrogram turned into audio piece by piece join without a seam.

Data: the committed 1 s of real music (tests/fixtures/audio/golden_small.wav) as a spectrogram,
cut into clips; the reference for "no seam" is the inside of the clips themselves."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from minriff.audio import io as audio_io
from minriff.audio.griffinlim import griffin_lim
from minriff.audio.seamless import PEAK, SeamlessAudio, clip_gain, seam_steps
from minriff.audio.spectrogram import SpectrogramParams, audio_to_image, image_to_audio, plan
from minriff.errors import InputError
from support import FIXTURES

HOP = 441
pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.fixture(scope="module")
def clips():
    wave, sr = audio_io.read_audio(FIXTURES / "audio" / "golden_small.wav")
    rgb = np.asarray(audio_to_image(wave[:1]).convert("RGB"))  # (512, 101, 3)
    return [rgb[:, a : a + 32] for a in (0, 32, 64)]


def test_pieces_tile_one_timeline(clips):
    s = SeamlessAudio(n_iter=8)
    pieces = [s.push(c) for c in clips]
    hold = s.hold
    assert hold == 2205  # half the 100 ms window
    assert [p.shape[1] for p in pieces] == [32 * HOP - hold, 32 * HOP, 32 * HOP]
    assert s.position == 96 * HOP - hold
    tail = s.flush()
    assert tail.shape[1] == hold and s.position == 96 * HOP  # the whole timeline, nothing twice
    assert np.abs(tail[:, -1]).max() < 1e-3 * PEAK  # faded out
    for p in pieces:
        assert p.dtype == np.float32 and np.abs(p).max() <= PEAK + 1e-7


def test_joins_look_like_the_inside_and_independent_clips_click(clips):
    s = SeamlessAudio(n_iter=16)
    pieces = [s.push(c) for c in clips]
    joins = np.cumsum([p.shape[1] for p in pieces])[:-1]
    seamless = seam_steps(np.concatenate(pieces, axis=1), joins, guard=1000)
    naive_pieces = [image_to_audio(Image.fromarray(c), n_iter=16, length=32 * HOP) for c in clips]
    naive = seam_steps(np.concatenate(naive_pieces, axis=1), [32 * HOP, 64 * HOP], guard=1000)
    # a click: a step larger than (almost) every step inside; seamless: an ordinary step
    assert max(naive["share_larger_inside"]) < 0.001, naive
    assert min(seamless["share_larger_inside"]) > 0.05, seamless
    assert max(seamless["join_steps"]) < seamless["inside_percentiles"][99]


def test_fixed_frames_stay_and_continue_the_earlier_run(clips):
    stft, _, banded = plan(SpectrogramParams())
    rng = np.random.default_rng(0)
    mag = rng.random((1, 40, stft.n_freqs)).astype(np.float32)
    first: list = []
    griffin_lim(mag[:, :24], stft, n_iter=4, rng=np.random.default_rng(1), spectra=first)
    fixed = first[0][:, -8:]
    second: list = []
    griffin_lim(mag[:, 16:], stft, n_iter=4, rng=np.random.default_rng(2), fixed=fixed, spectra=second)
    assert np.array_equal(second[0][:, :8], fixed)  # held through every iteration
    # without `fixed` the result is what it always was (the default path is untouched)
    a = griffin_lim(mag, stft, n_iter=3, rng=np.random.default_rng(3))
    b = griffin_lim(mag, stft, n_iter=3, rng=np.random.default_rng(3), length=39 * HOP)
    assert np.array_equal(a, b)
    with pytest.raises(InputError, match="do not fit"):
        griffin_lim(mag, stft, n_iter=1, fixed=fixed[:, :, :10])


def test_clip_gain_is_the_originals_loudness_stage(clips):
    raw = image_to_audio(Image.fromarray(clips[0]), n_iter=8, loudness=None, length=32 * HOP)
    ref = audio_io.loudness_riffusion(raw)  # int16 steps of the original (pydub/audioop rounding)
    mine = np.clip(raw * clip_gain(raw), -PEAK, PEAK)
    assert np.abs(mine - ref).max() * 32768 < 20  # the same curve, up to its int16 truncations
    quiet = raw * 1e-3  # loudness is scale-free
    assert clip_gain(quiet) == pytest.approx(clip_gain(raw) * 1e3, rel=1e-5)
    assert clip_gain(np.zeros((1, 10))) == 1.0


def test_push_checks_its_input(clips):
    s = SeamlessAudio(n_iter=1)
    with pytest.raises(InputError, match="512 px high"):
        s.push(np.zeros((256, 32, 3), np.uint8))
    s.push(clips[0])
    stereo = SeamlessAudio(SpectrogramParams(stereo=True), n_iter=1)
    stereo.push(clips[0])  # G/B channels of an RGB image: two channels
    s._ctx_mag = stereo._ctx_mag  # a stream cannot switch channel counts
    with pytest.raises(InputError, match="mono and stereo"):
        s.push(clips[1])
