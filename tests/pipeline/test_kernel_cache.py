"""The sampling loop runs inside `kernels.weight_cache` (the cpu backend keeps Winograd-transformed
conv weights across the steps): with the budget Riffusion.kernel_cache_budget says, entered once
per loop and left when the loop ends; the images do not depend on it."""
from __future__ import annotations

import numpy as np
import pytest

from minriff import Riffusion, kernels, pipeline
from minriff.kernels.cpu import weightcache

pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.fixture()
def budgets(monkeypatch):
    seen = []
    real = kernels.weight_cache

    def spy(budget, backend_name=None):
        seen.append(budget)
        return real(budget, backend_name)

    monkeypatch.setattr(kernels, "weight_cache", spy)
    return seen


def test_budget_defaults_and_override(tiny, budgets, monkeypatch):
    monkeypatch.setattr(pipeline, "_available_bytes", lambda: 1 << 40)
    monkeypatch.setattr(pipeline, "KERNEL_CACHE_MIN_STEPS", 2)
    from minriff.kernels.cpu import conv as cpu_conv

    monkeypatch.setattr(cpu_conv, "FORCE_PATH", "winograd")  # the tiny model's 3x3 convs through Winograd
    kernels.release_weight_cache()
    riff = Riffusion.load(tiny, quiet=True)
    assert riff.kernel_cache_budget() == pipeline.KERNEL_CACHE_MB << 20 > 0
    riff.generate_spectrogram("jazz", duration_s=0.64, steps=2, seed=1)
    assert budgets == [pipeline.KERNEL_CACHE_MB << 20]  # one block for the whole loop
    pooled = kernels.weight_cache_pooled_bytes()
    assert pooled > 0  # the loop's transforms, kept as buffers for the next loop
    riff.generate_spectrogram("jazz", duration_s=0.64, steps=1, seed=1)
    assert budgets[-1] == pooled  # a short loop: only memory an earlier loop left paged in
    kernels.release_weight_cache()
    riff.generate_spectrogram("jazz", duration_s=0.64, steps=1, seed=1)
    assert budgets[-1] == 0  # none left: too short to win back filling fresh memory
    monkeypatch.setattr(pipeline, "_available_bytes", lambda: 3 << 30)  # a small machine: half of what is free
    assert riff.kernel_cache_budget() == 3 << 29
    assert weightcache.used_bytes() == 0 and not weightcache.active()
    lazy = Riffusion.load(tiny, quiet=True, low_memory=True)
    assert lazy.kernel_cache_budget() == 0  # low_memory is for a low peak
    lazy.kernel_cache_bytes = 5 << 20
    assert lazy.kernel_cache_budget() == 5 << 20
    assert lazy.kernel_cache_budget(steps=1) == 5 << 20  # set by hand: taken whatever the loop


def test_images_do_not_depend_on_the_cache(tiny, monkeypatch):
    from minriff.kernels.cpu import conv as cpu_conv

    monkeypatch.setattr(cpu_conv, "FORCE_PATH", "winograd")  # the tiny model's 3x3 convs through Winograd
    transforms = []
    real = cpu_conv.cpu_winograd.transformed
    monkeypatch.setattr(cpu_conv.cpu_winograd, "transformed", lambda w: transforms.append(1) or real(w))
    riff = Riffusion.load(tiny, quiet=True)
    monkeypatch.setattr(pipeline, "KERNEL_CACHE_MIN_STEPS", 3)
    riff.kernel_cache_bytes = 0
    off = riff.generate_spectrogram("jazz", duration_s=0.64, steps=3, seed=2)
    uncached, transforms[:] = len(transforms), []
    riff.kernel_cache_bytes = None
    on = riff.generate_spectrogram("jazz", duration_s=0.64, steps=3, seed=2)
    assert np.array_equal(on, off)
    assert 0 < len(transforms) < uncached  # the UNet's transforms were made once, not per step
    assert all(p.flags.writeable for _, p in riff.unet.named_parameters())  # writable again after the loop


@pytest.mark.parametrize("raw", ["lots", "-5", "nan", "1e400"])
def test_a_bad_environment_budget_is_named(tiny, monkeypatch, raw):
    from minriff.errors import InputError

    riff = Riffusion.load(tiny, quiet=True)
    monkeypatch.setattr(pipeline, "KERNEL_CACHE_MIN_STEPS", 1)
    monkeypatch.setenv("MINRIFF_KERNEL_CACHE_MB", raw)
    with pytest.raises(InputError, match="MINRIFF_KERNEL_CACHE_MB"):
        riff.generate_spectrogram("jazz", duration_s=0.64, steps=1, seed=1)
    monkeypatch.setenv("MINRIFF_KERNEL_CACHE_MB", "1.5")  # set: taken as it is
    assert riff.kernel_cache_budget() == int(1.5 * (1 << 20))


def test_available_memory_is_read():
    free = pipeline._available_bytes()
    assert 0 < free < 1 << 62  # this test machine runs Linux
