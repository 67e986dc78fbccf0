"""The whole tiny text -> spectrogram pipeline on the cuda backend (through the emulator here)
against the cpu backend: `Riffusion.load(..., backend="cuda")` must match to 1e-4."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from minriff import kernels
from minriff.cli import main
from minriff.kernels.cuda import loader

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and not loader.gpu_available(),
                                reason="the cuda backend needs a GPU or g++ for the emulator")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    assert main(["init-random", "--config", "tiny", "-o", str(path)]) == 0
    return str(path)


def run(path, backend):
    """Text states, final latents, decoded float image and the uint8 spectrogram of one backend."""
    from minriff.pipeline import Riffusion

    pipe = Riffusion.load(path, backend=backend, quiet=True)
    seen = {}
    decode = pipe.decode_latents

    def capture(latents):
        seen["latents"] = np.array(latents)
        z = pipe.F.asarray((latents / np.float32(pipe.config.vae.scaling_factor)).astype(np.float32))
        seen["decoded"] = np.asarray(pipe.F.to_host(pipe.vae.decode(z)))
        return decode(latents)

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
