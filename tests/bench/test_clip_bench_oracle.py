"""The diffusers side of `minriff bench clip` computes the same clip as minriff (same weights, LoRA,
TAESD, prompt states, scheduler, DeepCache, seed), so its timings compare like with like: the
spectrogram images agree within 1/255 on >= 99 % of pixels, for both presets, on the tiny model."""
from __future__ import annotations

import numpy as np
import pytest

from minriff.bench import clip
from support import oracle

pytestmark = [pytest.mark.oracle, pytest.mark.usefixtures("serial_numba")]


@pytest.mark.parametrize("preset", ["quality", "fast"])
def test_the_baseline_makes_the_same_image(preset, tmp_path, monkeypatch):
    oracle("torch"), oracle("diffusers"), oracle("transformers")
    if preset == "fast":
        oracle("DeepCache")
    short = {**clip.presets.options(preset), "steps": 4 if preset == "fast" else 3}
    monkeypatch.setattr(clip.presets, "options", lambda name: dict(short))
    riff, _ = clip.build(None, True, tmp_path)
    ids = clip._token_ids(riff, short["guidance"])
    theirs = clip.diffusers_factory(None, True, tmp_path, preset, ids)
    theirs["text"](), theirs["denoise"](), theirs["decode"]()
    if preset == "fast":
        assert theirs["deepcache"]().startswith("DeepCacheSDHelper")
    _, ours = clip.minriff_clip(riff, short, 0.64)
    ref = theirs["image"]()
    gap = np.abs(ref.astype(int) - ours.astype(int))
    assert ref.shape == ours.shape == (512, 64, 3)
    assert np.mean(gap <= 1) >= 0.99, (gap.max(), np.mean(gap <= 1))
    assert ours.std() > 5  # a real image, not a constant one both sides happen to agree on
