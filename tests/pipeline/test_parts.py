"""Riffusion composed of parts: models, a scheduler object (one written here), spectrogram
parameters and a default seed given at construction; the flat parameter vector, clone and save."""
from __future__ import annotations

import numpy as np
import pytest

from minriff import Riffusion, weights
from minriff.audio.spectrogram import SpectrogramParams
from minriff.errors import InputError
from minriff.models import random_models
from support import FIXTURES, rel_err

WEIGHTS = FIXTURES / "pipeline" / "tiny_sd.safetensors"
KW = dict(duration_s=0.64, steps=3, guidance=7.0)
pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.fixture(scope="module")
def riff():
    return Riffusion.load(WEIGHTS, quiet=True)


class PlainDDIM:
    """DDIM (eta 0) written from its formulas for this test, independent of minriff.schedulers:
    SD's scaled-linear betas, "leading" timesteps + steps_offset 1, final alpha = alphas_cumprod[0];
    x0 clipped to [-1, 1] only with `clip` (DDIM's clip_sample default, which diffusers' Stable
    Diffusion pipelines turn off and Riffusion's PNDM config does not mention)."""

    def __init__(self, clip=False):
        self.clip = clip
        betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        self.timesteps = None
        self.init_noise_sigma = 1.0
        self.calls = 0

    def set_timesteps(self, n):
        self.step_size = 1000 // n
        self.timesteps = np.arange(n)[::-1] * self.step_size + 1

    def scale_model_input(self, x, t):
        return x

    def step(self, eps, t, x, generator=None):
        self.calls += 1
        a_t = self.alphas_cumprod[t]
        prev = t - self.step_size
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else self.alphas_cumprod[0]
        x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        x0 = np.clip(x0, -1.0, 1.0) if self.clip else x0
        return (np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps).astype(np.float32)

    def add_noise(self, x0, noise, t):
        a = self.alphas_cumprod[t]
        return (np.sqrt(a) * x0 + np.sqrt(1 - a) * noise).astype(np.float32)


def final_latents(r, **kw):
    seen = []
    r.generate_spectrogram("jazz piano", seed=3, callback=lambda i, n, t, x: seen.append(x.copy()), **{**KW, **kw})
    return seen[-1]


def test_a_scheduler_written_here_matches_the_builtin_ddim(riff):
    mine = PlainDDIM()
    custom = Riffusion.load(WEIGHTS, quiet=True, scheduler=mine)
    got = final_latents(custom)
    want = final_latents(riff, scheduler="ddim")
    assert rel_err(got, want) < 1e-5
    assert mine.timesteps is None and mine.calls == 0  # each run steps a copy: the object is untouched
    # passed per call as well, img2img through add_noise too
    image = riff.generate_spectrogram("jazz piano", seed=3, **KW)
    a = custom.generate_spectrogram("organ", seed=4, init_image=image, strength=0.7, **KW)
    b = riff.generate_spectrogram("organ", seed=4, init_image=image, strength=0.7, scheduler="ddim", **KW)
    assert np.mean(np.abs(a.astype(int) - b) <= 1) > 0.99


def test_ddim_clips_x0_only_where_its_diffusers_pipeline_does(riff):
    """generate (StableDiffusionPipeline) runs DDIM unclipped; riffuse (the original RiffusionPipeline)
    and ControlNet runs keep the config's clip_sample (DDIM's default: on). Told apart with PlainDDIM."""
    assert rel_err(final_latents(riff, scheduler="ddim"), final_latents(riff, scheduler=PlainDDIM(clip=False))) < 1e-5
    assert rel_err(final_latents(riff, scheduler="ddim"), final_latents(riff, scheduler=PlainDDIM(clip=True))) > 1e-2
    seed_image = riff.generate_spectrogram("jazz piano", seed=3, **KW)
    start, end = dict(prompt="a", seed=1, denoising=0.9), dict(prompt="b", seed=2, denoising=0.9)

    def riffused(scheduler):
        seen = []
        riff.riffuse(start, end, 0.5, seed_image, steps=4, scheduler=scheduler,
                     callback=lambda i, n, t, x: seen.append(x.copy()))
        return seen[-1]

    by_name = riffused("ddim")
    assert rel_err(by_name, riffused(PlainDDIM(clip=True))) < 1e-5
    assert rel_err(by_name, riffused(PlainDDIM(clip=False))) > 1e-2


def test_a_scheduler_object_missing_a_method_is_refused(riff):
    class NoStep:
        def set_timesteps(self, n): ...

        def scale_model_input(self, x, t): ...

    with pytest.raises(InputError, match="NoStep lacks step"):
        Riffusion.load(WEIGHTS, quiet=True, scheduler=NoStep())
    with pytest.raises(InputError, match="NoStep lacks step"):
        riff.generate_spectrogram("jazz", scheduler=NoStep(), **KW)
    with pytest.raises(InputError, match="unknown scheduler 'heun'"):
        riff.generate_spectrogram("jazz", scheduler="heun", **KW)


def test_the_construction_seed_is_the_default(riff):
    seeded = Riffusion.load(WEIGHTS, quiet=True, seed=7)
    a = seeded.generate_spectrogram("jazz", **KW)
    assert seeded.last_seed == 7
    assert np.array_equal(a, riff.generate_spectrogram("jazz", seed=7, **KW))
    assert not np.array_equal(a, seeded.generate_spectrogram("jazz", seed=8, **KW))  # a call's seed wins
    with pytest.raises(InputError, match="seed"):
        Riffusion.load(WEIGHTS, quiet=True, seed="abc")


def test_parts_replace_the_loaded_ones(riff):
    loaded = weights.load_models(WEIGHTS)
    same = Riffusion(unet=loaded["unet"], weights_path=WEIGHTS, quiet=True)  # the rest from the file
    assert same.unet is loaded["unet"] and same.vae is not loaded["vae"]
    assert np.array_equal(same.generate_spectrogram("jazz", seed=1, **KW),
                          riff.generate_spectrogram("jazz", seed=1, **KW))
    other = random_models(riff.config, seed=5)
    mixed = Riffusion(loaded, unet=other["unet"], quiet=True)
    assert mixed.unet is other["unet"] and mixed.vae is loaded["vae"]
    assert not np.array_equal(mixed.generate_spectrogram("jazz", seed=1, **KW),
                              riff.generate_spectrogram("jazz", seed=1, **KW))
    assert riff.latent_channels == 4 == riff.config.unet.in_channels


def test_spectrogram_parameters_are_used():
    stereo = Riffusion(random_models("tiny"), spectrogram=SpectrogramParams(stereo=True), quiet=True)
    wave = np.random.default_rng(0).standard_normal((2, 44100)).astype(np.float32) * 0.1
    image = stereo.audio_to_spectrogram(wave)
    assert not image[..., 0].any() and image[..., 1].any() and image[..., 2].any()  # R = 0, G/B = channels
    assert stereo.spectrogram_to_audio(image).shape[0] == 2
    with pytest.raises(InputError, match="SpectrogramParams"):
        Riffusion(random_models("tiny"), spectrogram={"stereo": True})


def test_parameters_set_parameters_and_clone(riff):
    v = riff.parameters()
    n = sum(m.num_parameters() for m in (riff.text_encoder, riff.unet, riff.vae))
    assert v.dtype == np.float32 and v.shape == (n,) == (riff.parameter_count,)
    names = [name for name, _ in riff.named_parameters()]
    assert names[0].startswith("text_encoder.") and names[-1].startswith("vae.") and len(names) == len(set(names))
    twin = riff.clone()
    before = riff.generate_spectrogram("jazz", seed=2, **KW)
    twin.set_parameters(v * np.float32(1.01))
    assert np.array_equal(twin.parameters(), v * np.float32(1.01))
    assert np.array_equal(riff.parameters(), v)  # the original is untouched
    assert not np.array_equal(twin.generate_spectrogram("jazz", seed=2, **KW), before)
    twin.set_parameters(v)
    assert np.array_equal(twin.generate_spectrogram("jazz", seed=2, **KW), before)
    with pytest.raises(InputError, match=f"{n} values .* got shape \\({n - 1},\\)"):
        twin.set_parameters(v[:-1])
    with pytest.raises(InputError, match="floating-point"):
        twin.set_parameters(np.zeros(n, np.int64))


@pytest.mark.parametrize("values", ["fp16-exact", "any"])
def test_save_then_load_gives_identical_outputs(riff, tmp_path, values):
    r = riff.clone()
    v = r.parameters()
    # "auto" stores fp16 only when that is exact (a model loaded from an fp16 file), else fp32
    r.set_parameters(v.astype(np.float16).astype(np.float32) if values == "fp16-exact" else v * np.float32(1 + 2**-15))
    path = tmp_path / "saved.safetensors"
    r.save(path)
    dtypes = {d for comp in weights.WeightsFile(path).summary().values() for d in comp["dtypes"]}
    assert dtypes == ({"F16"} if values == "fp16-exact" else {"F32"})
    again = Riffusion.load(path, quiet=True)
    assert np.array_equal(again.parameters(), r.parameters())
    assert np.array_equal(again.generate_spectrogram("jazz", seed=2, **KW),
                          r.generate_spectrogram("jazz", seed=2, **KW))
