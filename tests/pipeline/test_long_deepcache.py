"""DeepCache on long pieces and remixes: each window's sampling loop takes the cache like a clip's.

Interval 1 is the uncached result bit for bit; interval 2 runs cached steps in every window (counted
through the UNet's two DeepCache entry points) and changes the result."""
from __future__ import annotations

import numpy as np
import pytest

from support import FIXTURES

WEIGHTS = FIXTURES / "pipeline" / "tiny_sd.safetensors"
LONG = dict(steps=4, seed=3, clip_px=128, overlap_px=64)
REMIX = dict(sample_rate=44100, steps=4, seed=5, window_px=128, overlap_px=64)

pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.fixture(scope="module")
def riff():
    from minriff import Riffusion

    return Riffusion.load(WEIGHTS, quiet=True)


@pytest.fixture
def counted(riff, monkeypatch):
    calls = {"full": 0, "cached": 0}
    full, step = riff.unet.deep_cache_full, riff.unet.deep_cache_step

    def count_full(*a, **k):
        calls["full"] += 1
        return full(*a, **k)

    def count_step(*a, **k):
        calls["cached"] += 1
        return step(*a, **k)

    monkeypatch.setattr(riff.unet, "deep_cache_full", count_full)
    monkeypatch.setattr(riff.unet, "deep_cache_step", count_step)
    return calls


def wave(seconds=1.5):
    t = np.arange(int(44100 * seconds)) / 44100
    return (0.3 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32)[None]


def test_long_piece_interval_1_is_uncached_and_2_caches_every_window(riff, counted):
    plain = riff.generate_long("lofi beat", 2.56, **LONG)  # 256 px: windows 0-128, 64-192, 128-256
    assert riff.generate_long("lofi beat", 2.56, cache_interval=1, **LONG).tobytes() == plain.tobytes()
    assert counted == {"full": 12, "cached": 0}
    counted.update(full=0, cached=0)
    cached = riff.generate_long("lofi beat", 2.56, cache_interval=2, **LONG)
    assert counted == {"full": 6, "cached": 6}  # steps 0, 2 full in each of 3 windows
    assert cached.shape == plain.shape and not np.array_equal(cached, plain)


def test_remix_interval_1_is_uncached_and_2_caches(riff, counted):
    plain, _ = riff.remix(wave(), "jazz", 0.75, **REMIX)
    same, _ = riff.remix(wave(), "jazz", 0.75, cache_interval=1, **REMIX)
    assert same.tobytes() == plain.tobytes() and counted["cached"] == 0 and counted["full"] > 0
    counted.update(full=0, cached=0)
    cached, _ = riff.remix(wave(), "jazz", 0.75, cache_interval=2, **REMIX)
    assert counted["cached"] > 0 and counted["full"] > 0
    assert cached.shape == plain.shape and not np.array_equal(cached, plain)
