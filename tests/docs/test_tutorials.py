"""Run every tutorial as a learner would (a fresh `python tutorials/NN_name.py`) and check what it
claims: exit code 0, the output files it announces (only inside $MINRIFF_TUTORIAL_OUT, nothing in
the working directory), and the numbers on its machine-readable last line `RESULT {json}`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support import ROOT

TUTORIALS = ROOT / "tutorials"
TIMEOUT_S = 600  # generous: the CI machine may be shared; each tutorial takes ~10-20 s alone


def run_tutorial(name: str, tmp_path: Path) -> tuple[dict, Path]:
    out, cwd = tmp_path / "out", tmp_path / "cwd"
    cwd.mkdir()
    env = dict(os.environ, MINRIFF_TUTORIAL_OUT=str(out))
    proc = subprocess.run([sys.executable, str(TUTORIALS / name)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert list(cwd.iterdir()) == [], f"{name} wrote into the working directory: {list(cwd.iterdir())}"
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), f"{name}: last line is not a RESULT line: {last!r}"
    return json.loads(last[len("RESULT "):]), out


def test_kernels_tutorial(tmp_path):
    r, _ = run_tutorial("01_kernels.py", tmp_path)
    # float32 cpu kernels vs float64 reference
    assert set(r["op_max_err"]) == {"conv2d", "group_norm+silu", "softmax", "gelu"}
    assert all(0 <= e < 1e-5 for e in r["op_max_err"].values()), r["op_max_err"]
    # the NumPy online softmax is the same function as the textbook formula, to float64 rounding
    assert r["attention_max_err"]["online (NumPy, float64)"] < 1e-12
    assert r["attention_max_err"]["cpu kernel (float32)"] < 1e-5
    # the tanh approximation of GELU is known to be off by a few 1e-4 at most
    assert 1e-4 < r["gelu_tanh_max_err"] < 1e-3
    # the UNet calls the fused geglu, never gelu: swapping gelu changes nothing, swapping geglu does
    calls = r["unet_op_calls"]
    assert "gelu" not in calls and calls["geglu"] > 0 and calls["attention"] > 0 and calls["conv2d"] > 0
    assert set(calls) <= {"conv2d", "linear", "group_norm", "layer_norm", "attention", "softmax", "silu",
                          "gelu", "quick_gelu", "geglu", "upsample_nearest2x", "timestep_embedding"}
    assert r["unet_change_gelu_only"] == 0.0
    assert 1e-7 < r["unet_change_geglu_tanh"] < 1e-2
    assert r["unet_restored_identical"] is True


def test_one_diffusion_step_tutorial(tmp_path):
    from PIL import Image

    from minriff import weights

    r, out = run_tutorial("02_one_diffusion_step.py", tmp_path)
    assert r["shapes"] == {"ids": [2, 77], "text_states": [2, 77, 16], "latents": [1, 4, 64, 8],
                           "image": [512, 64, 3]}
    # diffusers' "leading" spacing with steps_offset=1 for 4 of 1000 steps: 0, 250, 500, 750 (+1), descending
    assert r["timesteps"] == [751, 501, 251, 1]
    assert r["step_max_err"] < 1e-6
    assert 0 < r["text_effect"] < 1
    assert r["pipeline_max_pixel_diff"] == 0  # the hand-made loop is the pipeline's
    # ... step by step, as the pipeline's callback saw its latents
    assert r["pipeline_steps_seen"] == 4 and r["pipeline_step_max_latent_diff"] == [0.0] * 4
    with Image.open(out / "spectrogram.png") as im:
        assert im.size == (64, 512)
    assert weights.WeightsFile(out / "tiny.safetensors").source["type"] == "random"


def test_spectrogram_audio_tutorial(tmp_path):
    from minriff.audio import io as audio

    r, out = run_tutorial("03_spectrogram_audio.py", tmp_path)
    assert r["image_size"] == [512, 512]  # 5.11 s = 511 hops -> 512 frames
    assert r["mapping_ok"] is True
    # reference/riffusion.md §1.3: v = 255 - 255 (S / max)^0.25, truncated
    expected = {str(db): int(255 - 255 * (10 ** (db / 20)) ** 0.25) for db in (0, -20, -40, -60, -80)}
    assert r["pixel_levels"] == expected
    assert r["column_pixels"]["55 Hz"] < 64 and r["column_pixels"]["5 kHz"] > 240  # loud bass dark, empty 5 kHz white
    nnls, sgd = r["nnls"], r["sgd"]
    assert all(abs(e) < 1e-3 for e in nnls["mel_rel_err"].values()), nnls["mel_rel_err"]
    # §1.6: the original's SGD leaves the low mel bands short (-31 % below 130 Hz on a 568-frame image)
    low = sgd["mel_rel_err"]
    assert low["<130 Hz"] < -0.15 and low["<130 Hz"] < low["130-280 Hz"] < low["0.7-2 kHz"]
    assert abs(low["2-10 kHz"]) < 0.01
    assert abs(nnls["bass_db"]) < 1.0
    assert sgd["bass_db"] < nnls["bass_db"] - 1.5  # the bass loss survives into the audio
    for m in (nnls, sgd):
        assert 0 < m["spectral_convergence"] < 1
    assert nnls["spectral_convergence"] < sgd["spectral_convergence"]
    for name in ("chord.wav", "chord_nnls.wav", "chord_sgd.wav"):
        wave, sr = audio.read_audio(out / name)
        assert sr == 44100 and wave.shape == (1, 511 * 441) and np.abs(wave).max() > 0.1
    assert (out / "chord.png").stat().st_size > 0


def test_lora_tutorial(tmp_path):
    from minriff.weights import SafetensorsFile

    r, out = run_tutorial("04_lora.py", tmp_path)
    # the hand-written W + s·B@A is what the pipeline merged, for a linear, a 3x3 stride-2 conv, a text-encoder layer
    assert set(r["merge_max_err"]) == {"to_q", "conv", "fc1"}
    assert all(0 <= e < 1e-6 for e in r["merge_max_err"].values()), r["merge_max_err"]
    assert r["unmerged_vs_merged_err"] < 1e-6  # W x + s·B(A x) == W' x
    assert r["lora_params"] == 2 * (8 + 8) + 2 * (8 * 9 + 8) + 4 * (16 + 32) and r["layer_params"] == 64 + 576 + 512
    assert r["half_weight_err"] < 1e-5 and r["stacked_err"] < 1e-6
    assert r["text_states_changed"] is True and r["unload_bit_identical"] is True
    assert len(r["keys"]) == 9 and all(k.startswith(("lora_unet_", "lora_te_")) for k in r["keys"])
    assert sorted(SafetensorsFile(out / "style.safetensors")) == r["keys"]  # the file the tutorial wrote


def test_readme_lists_every_tutorial():
    readme = (TUTORIALS / "README.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in TUTORIALS.glob("[0-9][0-9]_*.py"))
    assert scripts == ["01_kernels.py", "02_one_diffusion_step.py", "03_spectrogram_audio.py", "04_lora.py"], \
        "a new tutorial needs a test here"
    for name in scripts:
        assert name in readme, f"tutorials/README.md does not mention {name}"


@pytest.mark.parametrize("name", ["01_kernels.py", "02_one_diffusion_step.py", "03_spectrogram_audio.py",
                                  "04_lora.py"])
def test_tutorial_reads_as_a_walkthrough(name):
    text = (TUTORIALS / name).read_text(encoding="utf-8")
    assert text.startswith('"""Tutorial'), "a tutorial opens with its narrative docstring"
    assert "import torch" not in text and "from torch" not in text, "tutorials run without torch"
