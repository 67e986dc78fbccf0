"""The dtype weights are held in: as stored by default (an fp16 file: float16, half the memory),
or float32 / float64 on request; the same pictures either way; parameters that a LoRA merge can
write in place (float32 arithmetic, stored back in the parameter's dtype); set_parameters never
rounds silently."""
from __future__ import annotations

import numpy as np
import pytest

from minriff import Riffusion, weights
from support import FIXTURES

WEIGHTS32 = FIXTURES / "pipeline" / "tiny_sd.safetensors"  # an fp32 file
KW = dict(duration_s=0.64, steps=2, guidance=7.0, seed=5)
pytestmark = pytest.mark.usefixtures("serial_numba")


def _dtypes(riff) -> set:
    return {p.dtype for _, p in riff.named_parameters()}


def _held_bytes(riff) -> int:
    return sum(p.nbytes for _, p in riff.named_parameters())


@pytest.fixture(scope="module")
def fp16_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("fp16") / "tiny16.safetensors"
    Riffusion.load(WEIGHTS32, quiet=True).save(p, dtype="fp16")
    return p


@pytest.fixture(scope="module")
def half(fp16_file):
    return Riffusion.load(fp16_file, quiet=True)


@pytest.fixture(scope="module")
def single(fp16_file):
    return Riffusion.load(fp16_file, quiet=True, dtype=np.float32)


def test_fp16_file_is_held_in_float16_by_default(fp16_file, half, single):
    assert weights.WeightsFile(fp16_file).summary()["unet"]["dtypes"] == ["F16"]
    assert _dtypes(half) == {np.dtype(np.float16)} and _dtypes(single) == {np.dtype(np.float32)}
    assert 2 * _held_bytes(half) == _held_bytes(single)
    assert np.array_equal(half.parameters(), single.parameters())


def test_same_picture_from_float16_and_float32_held_weights(half, single):
    a = half.generate_spectrogram("jazz", **KW)
    assert a.std() > 1.0
    assert np.array_equal(a, single.generate_spectrogram("jazz", **KW))


def test_fp32_file_is_held_in_float32():
    assert weights.WeightsFile(WEIGHTS32).summary()["unet"]["dtypes"] == ["F32"]
    assert _dtypes(Riffusion.load(WEIGHTS32, quiet=True)) == {np.dtype(np.float32)}


def test_parameters_are_writable_copies_not_views_of_the_file(half):
    for name, p in half.named_parameters():
        assert p.flags.writeable and p.flags.owndata and p.flags.c_contiguous, name


def test_lora_style_merge_in_place_keeps_the_parameter_dtype(half, single):
    """A merge as the LoRA loader does it: W + scale * (B @ A) in float32, stored back in W's dtype.
    The float16-held model then computes what a float32-held model with the same stored values does."""
    a16, a32 = half.clone(), single.clone()
    before = a16.generate_spectrogram("jazz", **KW)
    rng = np.random.default_rng(0)
    for riff in (a16, a32):
        proj = riff.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
        w = proj.weight
        down = rng.standard_normal((2, w.shape[1]), dtype=np.float32)
        up = rng.standard_normal((w.shape[0], 2), dtype=np.float32)
        merged = w.astype(np.float32) + np.float32(0.5) * (up @ down)
        w[...] = merged.astype(np.float16).astype(w.dtype)  # the float32 model gets the same stored values
        rng = np.random.default_rng(0)
    w16 = a16.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    assert w16.dtype == np.float16
    after = a16.generate_spectrogram("jazz", **KW)
    assert not np.array_equal(after, before)
    assert np.array_equal(after, a32.generate_spectrogram("jazz", **KW))


def test_set_parameters_keeps_float16_only_for_exact_values(half):
    r = half.clone()
    v = r.parameters()
    r.set_parameters(v)
    assert _dtypes(r) == {np.dtype(np.float16)}
    r.set_parameters(v * np.float32(1 + 2**-15))  # not float16 values: held in float32, not rounded
    assert np.dtype(np.float32) in _dtypes(r)
    assert np.array_equal(r.parameters(), v * np.float32(1 + 2**-15))
