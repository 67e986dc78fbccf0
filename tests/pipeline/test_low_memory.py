"""`Riffusion.load(low_memory=True)`: the networks load from the file when a stage needs them, one
resident at a time, and every result is bit for bit what the resident pipeline makes."""
from __future__ import annotations

import numpy as np
import pytest

from minriff import Riffusion
from minriff.cli import main
from minriff.riffuse import PromptInput

pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.fixture(scope="module")
def pair(tiny):
    return Riffusion.load(tiny, quiet=True), Riffusion.load(tiny, quiet=True, low_memory=True)


def resident(riff) -> set[str]:
    return {name for name, model in riff._parts.items() if model is not None}


def seed_image(width=64):
    y, x = np.mgrid[0:512, 0:width]
    return np.repeat((128 + 60 * np.sin(x / 3.0) * np.cos(y / 17.0)).astype(np.uint8)[..., None], 3, axis=2)


def test_nothing_loads_until_used_and_one_network_is_resident_per_stage(pair):
    _, lazy = pair
    fresh = Riffusion.load(lazy.source, quiet=True, low_memory=True)
    assert fresh.low_memory and resident(fresh) == set()
    seen = []
    fresh.generate_spectrogram("jazz", duration_s=0.64, steps=2, seed=1,
                               callback=lambda *a: seen.append(resident(fresh)))
    assert seen == [{"unet"}, {"unet"}]  # the text encoder was dropped before the UNet loaded
    assert resident(fresh) == {"vae"}  # and the UNet before the VAE decoded


@pytest.mark.parametrize("options", [dict(steps=3), dict(steps=4, cache_interval=2, cache_branch=1),
                                     dict(steps=3, guidance=1.0, scheduler="lcm")])
def test_generate_is_bit_identical(pair, options):
    full, lazy = pair
    a = full.generate_spectrogram("jazz", negative_prompt="noise", duration_s=0.64, seed=3, **options)
    b = lazy.generate_spectrogram("jazz", negative_prompt="noise", duration_s=0.64, seed=3, **options)
    assert np.array_equal(a, b)


def test_img2img_interpolate_and_riffuse_are_bit_identical(pair):
    full, lazy = pair
    for riff in pair:
        riff._text_cache.clear()
    img = seed_image()
    outs = []
    for riff in (full, lazy):
        outs.append((
            riff.generate_spectrogram("bells", init_image=img, strength=0.6, steps=4, seed=5),
            riff.interpolate_styles("bells", "jazz", 0.4, seed_a=1, seed_b=2, steps=3, duration_s=0.64),
            riff.riffuse(PromptInput("bells", 1), PromptInput("jazz", 2), 0.25, img, steps=4),
        ))
    for a, b in zip(*outs):
        assert np.array_equal(a, b)


def test_lora_and_set_parameters_keep_everything_loaded(tiny):
    from support import FIXTURES

    lazy = Riffusion.load(tiny, quiet=True, low_memory=True)
    lazy.load_lora(FIXTURES / "lora" / "kohya.safetensors", weight=0.7)
    assert not lazy.low_memory and resident(lazy) == {"text_encoder", "unet", "vae"}
    full = Riffusion.load(tiny, quiet=True)
    full.load_lora(FIXTURES / "lora" / "kohya.safetensors", weight=0.7)
    args = dict(duration_s=0.64, steps=2, seed=4)
    assert np.array_equal(full.generate_spectrogram("x", **args), lazy.generate_spectrogram("x", **args))

    lazy = Riffusion.load(tiny, quiet=True, low_memory=True)
    v = lazy.parameters()  # reading loads each network in turn; low_memory stays on
    assert lazy.low_memory and v.size == full.parameter_count
    lazy.set_parameters(v * 0.5)
    assert not lazy.low_memory and np.array_equal(lazy.parameters(), (v * 0.5).astype(np.float32))


def test_a_model_set_by_hand_stays_and_clone_is_independent(tiny):
    lazy = Riffusion.load(tiny, quiet=True, low_memory=True)
    other = Riffusion.load(tiny, quiet=True)
    lazy.unet = other.unet
    assert not lazy.low_memory and lazy.unet is other.unet
    lazy2 = Riffusion.load(tiny, quiet=True, low_memory=True)
    twin = lazy2.clone()
    twin.generate_spectrogram("x", duration_s=0.64, steps=1, seed=1)
    assert resident(lazy2) == set() and resident(twin) == {"vae"}


def test_the_one_shot_command_line_runs_low_memory_with_the_same_result(tiny, tmp_path, monkeypatch):
    import minriff.pipeline

    modes = []
    real = minriff.pipeline.Riffusion.load.__func__

    def spy(cls, *a, **k):
        modes.append(k.get("low_memory", False))
        return real(cls, *a, **k)
    monkeypatch.setattr(minriff.pipeline.Riffusion, "load", classmethod(spy))
    out = tmp_path / "a.png"
    assert main(["generate", "jazz", "--weights", tiny, "--seconds", "0.64", "--steps", "2", "--seed", "7",
                 "--image", str(out), "--quiet"]) == 0
    assert modes == [True]
    from PIL import Image

    want = Riffusion.load(tiny, quiet=True).generate_spectrogram("jazz", duration_s=0.64, steps=2, seed=7)
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), want)
