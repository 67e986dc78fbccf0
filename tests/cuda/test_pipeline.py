"""The whole tiny text -> spectrogram pipeline on the cuda backend (through the emulator here)
against the cpu backend: `Riffusion.load(..., backend="cuda")` must match to 1e-4."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from minriff import kernels
from minriff.kernels.cuda import loader

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and not loader.gpu_available(),
                                reason="the cuda backend needs a GPU or g++ for the emulator")


def run(path, backend):
    """Text states, final latents, decoded float image and the uint8 spectrogram of one backend."""
    from minriff.pipeline import Riffusion

    pipe = Riffusion.load(path, backend=backend, quiet=True)
    seen = {}
    decode = pipe.decode_latents

    def capture(latents, decoder=None):
        seen["latents"] = np.array(latents)
        z = pipe.F.asarray((latents / np.float32(pipe.config.vae.scaling_factor)).astype(np.float32))
        seen["decoded"] = np.asarray(pipe.F.to_host(pipe.vae.decode(z)))
        return decode(latents, decoder)

    pipe.decode_latents = capture
    seen["image"] = pipe.generate_spectrogram("jazz piano", duration_s=1.0, steps=2, guidance=3.0, seed=7,
                                              scheduler="ddim")
    seen["text"] = np.asarray(pipe.encode_prompt("jazz piano"))
    return seen


def test_tiny_pipeline_cuda_matches_cpu(tiny):
    before = kernels.backend()
    try:
        cpu = run(tiny, "cpu")
        cuda = run(tiny, "cuda")
    finally:
        kernels.backend(before)
    for key in ("text", "latents", "decoded"):
        assert cuda[key].shape == cpu[key].shape
        np.testing.assert_allclose(cuda[key], cpu[key], rtol=1e-4, atol=1e-4, err_msg=key)
    diff = np.abs(cuda["image"].astype(int) - cpu["image"].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # uint8 rounding of values within 1e-4


def test_taesd_cuda_matches_cpu():
    """TAESD (convs, relu with and without the residual, nearest upsample, tanh clamp) on both backends."""
    import copy

    from minriff.models import random_taesd

    model = random_taesd("tiny", seed=1)
    rng = np.random.default_rng(2)
    z = (rng.standard_normal((1, 4, 8, 6)) * 2).astype(np.float32)
    img = np.tanh(rng.standard_normal((1, 3, 64, 48))).astype(np.float32)
    before = kernels.backend()
    try:
        kernels.backend("cpu")
        cpu = model.decode(z), model.encode(img)
        kernels.backend("cuda")
        F = kernels.ops()
        dev = copy.deepcopy(model).apply_to_parameters(F.asarray)
        cuda = F.to_host(dev.decode(F.asarray(z))), F.to_host(dev.encode(F.asarray(img)))
    finally:
        kernels.backend(before)
    for got, want in zip(cuda, cpu):
        assert got.shape == want.shape and np.abs(want).max() > 0.1
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_controlnet_cuda_matches_cpu(tiny):
    """A ControlNet-guided run (guess mode, guidance) on both backends: the ControlNet's weights go to
    the device as the pipeline's do."""
    import copy

    from minriff.models import random_controlnet
    from minriff.pipeline import Riffusion

    net = random_controlnet("tiny", seed=3)
    hint = (np.random.default_rng(4).random((512, 128, 3)) * 255).astype(np.uint8)
    before = kernels.backend()
    images = {}
    try:
        for backend in ("cpu", "cuda"):
            pipe = Riffusion.load(tiny, backend=backend, quiet=True)
            images[backend] = pipe.generate_spectrogram("jazz", duration_s=1.28, steps=2, guidance=3.0, seed=7,
                                                        scheduler="ddim", controls=[(copy.deepcopy(net), hint, 0.8)],
                                                        guess_mode=True)
    finally:
        kernels.backend(before)
    plain = Riffusion.load(tiny, quiet=True).generate_spectrogram("jazz", duration_s=1.28, steps=2, guidance=3.0,
                                                                  seed=7, scheduler="ddim")
    diff = np.abs(images["cuda"].astype(int) - images["cpu"].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert np.mean(images["cpu"] != plain) > 0.1
