"""LoRA against diffusers 0.42 + peft live, on freshly built tiny random SD models (make_pipeline.py)
and freshly drawn LoRAs (make_lora.py): kohya (attention, feed-forward, proj, LoCon 3x3 convs incl.
the stride-2 downsampler and the upsampler, time_emb_proj, conv_shortcut, text encoder; alphas
differing between layer kinds) and PEFT (made by peft, rank_pattern/alpha_pattern, saved by
diffusers). diffusers `load_lora_weights` + `fuse_lora(lora_scale=0.7)` vs minriff at weight 0.7:
images within 1/255 on >= 99 % of pixels; two LoRAs stacked; weight 0 and unload equal no LoRA.

Per-layer alphas on attention projections and text-encoder layers: diffusers uses the file's most
common alpha there instead (reference §5.5; its alpha_pattern keys match no module), so for a file
whose every layer has its own alpha the expected weights are computed here with torch from the
formula W + 0.7·(alpha/rank)·up@down, and diffusers' own run is fed those weights."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

from support import oracle
from support.lora_cases import kohya_name, ml, mp, weight_of

pytestmark = [pytest.mark.oracle, pytest.mark.usefixtures("serial_numba")]


def assert_same_image(ours, theirs, what):
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert np.mean(diff <= 1) >= 0.99, f"{what}: {np.mean(diff <= 1):.2%} of pixels within 1/255 (max {diff.max()})"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    for pkg in ("torch", "diffusers", "transformers", "peft"):
        oracle(pkg)
    tmp = tmp_path_factory.mktemp("lora_live")
    comps = mp.build_components(tmp)
    mp.write_minriff_weights(comps, tmp / "tiny.safetensors")
    ml.write_kohya(tmp / "kohya.safetensors", ml.kohya_state_dict(comps, seed=5))
    ml.write_peft(comps, tmp / "peft.safetensors", seed=6)
    ml.write_kohya(tmp / "mixed.safetensors", ml.kohya_state_dict(comps, seed=7, rank_alpha=ml.mixed_rank_alpha))
    base = mp.run_diffusers(comps, mp.CASES[ml.CASE])
    return tmp, base


def minriff_image(tmp, files):
    from minriff import Riffusion

    riff = Riffusion.load(tmp / "tiny.safetensors", quiet=True)
    for path, weight in files:
        riff.load_lora(path, weight=weight)
    return riff, mp.run_minriff(riff, mp.CASES[ml.CASE])


@pytest.mark.parametrize("files", [[("kohya", 0.7)], [("peft", 0.7)], [("kohya", 0.7), ("peft", 0.5)]],
                         ids=["kohya", "peft", "stacked"])
def test_images_match_diffusers(live, files):
    tmp, base = live
    files = [(tmp / f"{name}.safetensors", w) for name, w in files]
    fused, theirs = ml.diffusers_fused(files)
    _, ours = minriff_image(tmp, files)
    assert np.mean(np.abs(theirs.astype(int) - base.astype(int)) > 2) > 0.3  # the LoRAs change the picture
    assert_same_image(ours, theirs, str(files))


def test_weights_match_diffusers_fuse(live):
    tmp, _ = live
    path = tmp / "kohya.safetensors"
    riff, _ = minriff_image(tmp, [(path, 0.7)])
    fused = ml.diffusers_fused([(path, 0.7)], keep=re.compile(".*"))[0]  # every changed layer
    assert len(fused) == 91
    for key, ref in fused.items():
        got = weight_of(riff, *key.split(".", 1))
        assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max(), key


def test_mixed_alphas_against_the_formula(live):
    """Every layer its own alpha: minriff vs W + 0.7·(alpha/rank)·up@down computed with torch, and the
    image vs diffusers' pipeline run on those weights (its own LoRA loader would use one alpha on
    the attention and text-encoder layers)."""
    import torch
    from safetensors.numpy import load_file

    tmp, base = live
    path = tmp / "mixed.safetensors"
    sd = load_file(str(path))
    with tempfile.TemporaryDirectory() as t:
        comps = mp.build_components(Path(t))
    riff, ours = minriff_image(tmp, [(path, 0.7)])
    alphas = {k[:-len(".alpha")]: float(v) for k, v in sd.items() if k.endswith(".alpha")}
    assert len(set(alphas.values())) > 5
    names = {kohya_name(c, m): (c, m) for c, m, _ in ml.targets(comps)}
    with torch.no_grad():
        for name, (comp, module) in names.items():
            down = torch.from_numpy(sd[name + ".lora_down.weight"])
            up = torch.from_numpy(sd[name + ".lora_up.weight"])
            rank = down.shape[0]
            mods = dict(comps[comp].named_modules())
            layer = mods.get(module) or mods[module.removeprefix("text_model.")]
            if down.ndim == 4:  # PEFT's conv delta: conv2d of A (as an input) with B
                delta = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
            else:
                delta = up @ down
            layer.weight += 0.7 * alphas[name] / rank * delta
            got = weight_of(riff, comp, module)
            ref = layer.weight.numpy()
            assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max(), name
    theirs = mp.run_diffusers(comps, mp.CASES[ml.CASE])
    assert np.mean(np.abs(theirs.astype(int) - base.astype(int)) > 2) > 0.3
    assert_same_image(ours, theirs, "mixed alphas")


def test_weight_zero_and_unload_equal_no_lora(live):
    tmp, base = live
    riff, zero = minriff_image(tmp, [(tmp / "kohya.safetensors", 0.0)])
    assert_same_image(zero, base, "weight 0")
    riff.set_lora_weight("kohya", 0.7)
    riff.unload_lora("kohya")
    assert_same_image(mp.run_minriff(riff, mp.CASES[ml.CASE]), base, "after unload")
