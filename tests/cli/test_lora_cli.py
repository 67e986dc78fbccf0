"""LoRA on the command line: `--lora FILE[:WEIGHT]` (parsing, stacking, errors) on generate /
interpolate / riffuse, and `minriff lora info`. The images are checked against the diffusers images
committed in tests/fixtures/lora/ (make_lora.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from minriff.cli import main
from minriff.errors import InputError
from minriff.inputs import parse_lora_spec
from support.lora_cases import layer_shapes, ml, mp, random_kohya, save, tiny_riff

pytestmark = pytest.mark.usefixtures("serial_numba")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- FILE[:WEIGHT] -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, expected", [
    ("style.safetensors", ("style.safetensors", 1.0)),
    ("style.safetensors:0.6", ("style.safetensors", 0.6)),
    ("style.safetensors:-1.5e0", ("style.safetensors", -1.5)),
    ("dir:with:colons/x.bin:2", ("dir:with:colons/x.bin", 2.0)),
    ("C:\\loras\\x.safetensors", ("C:\\loras\\x.safetensors", 1.0)),  # a drive letter is no weight
    ("x.safetensors:strong", ("x.safetensors:strong", 1.0)),  # not a number: part of the path
])
def test_lora_spec(spec, expected):
    assert parse_lora_spec(spec) == expected


@pytest.mark.parametrize("spec", ["x.safetensors:nan", "x.safetensors:inf", "x.safetensors:-Infinity", "x:1e300",
                                  "x:100.01", "x:-101", ""])
def test_lora_spec_refuses_weights_outside_the_limits(spec):
    with pytest.raises(InputError, match=r"must be a number in \[-100, 100\]|needs FILE"):
        parse_lora_spec(spec)


def test_an_existing_file_with_a_colon_is_taken_whole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v2:0.5").write_bytes(b"")
    assert parse_lora_spec("v2:0.5") == ("v2:0.5", 1.0)


@given(path=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1),
       weight=st.floats(-100, 100))
def test_lora_spec_round_trip(path, weight):
    assert parse_lora_spec(f"{path}:{weight!r}") == (path, weight)


# ---- --lora on the generating commands -------------------------------------------------------------
def _case_args(out_png):
    case = mp.CASES[ml.CASE]
    return ["generate", case["prompt"], "--negative", case["negative"], "--steps", case["steps"],
            "--guidance", case["guidance"], "--seed", case["seed"], "--scheduler", case["scheduler"],
            "--seconds", mp.WIDTH / 100, "--image", out_png, "--weights", mp.WEIGHTS]


def test_generate_with_stacked_loras_matches_diffusers(tmp_path, capsys):
    png = tmp_path / "out.png"
    code, _, err = run(capsys, *_case_args(png), "--lora", f"{ml.KOHYA}:{ml.STACK[0]}",
                       "--lora", f"{ml.PEFT}:{ml.STACK[1]}")
    assert code == 0, err
    assert "LoRA kohya (kohya, rank 4) at weight 0.7: 12 text encoder, 79 unet layers" in err
    assert "LoRA peft (peft, rank 4) at weight 0.5" in err
    ours = np.asarray(Image.open(png).convert("RGB")).astype(int)
    diff = np.abs(ours - np.load(ml.EXPECTED)["image/stacked"].astype(int))
    assert np.mean(diff <= 1) >= 0.99


def test_lora_option_errors_are_one_line(tmp_path, capsys):
    code, _, err = run(capsys, *_case_args(tmp_path / "o.png"), "--lora", tmp_path / "nope.safetensors:strong")
    assert code == 2 and err.count("\n") == 1
    assert "nope.safetensors:strong not found (in FILE:WEIGHT the text after the last ':' must be a number" in err
    with pytest.raises(SystemExit) as e:  # argparse: usage + one line, status 2
        main([str(a) for a in _case_args(tmp_path / "o.png")] + ["--lora", f"{ml.KOHYA}:nan"])
    assert e.value.code == 2 and "must be a number in [-100, 100]" in capsys.readouterr().err
    loha = random_kohya(dict(list(layer_shapes(tiny_riff()).items())[:2]))
    name = next(iter(loha)).split(".")[0]
    loha[name + ".hada_w1_a"] = np.ones((2, 2), np.float32)
    code, _, err = run(capsys, *_case_args(tmp_path / "o.png"), "--quiet",  # no loading bars before the error
                       "--lora", save(tmp_path / "loha.safetensors", loha))
    assert code == 2 and "unsupported LoRA type LoHa" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["interpolate", "riffuse"])
def test_interpolate_and_riffuse_take_lora(tmp_path, capsys, command):
    args = {"interpolate": ["interpolate", "a", "b", "--frames", 2, "--seconds", 0.64],
            "riffuse": ["riffuse", "--start", "a", "--seed-image", _seed_png(tmp_path)]}[command]
    code, _, err = run(capsys, *args, "--steps", 1, "--image", tmp_path / "x.png", "--weights", mp.WEIGHTS,
                       "--lora", f"{ml.KOHYA}:0.3", *(["-o", tmp_path / "x.wav"] if command == "interpolate" else []))
    assert code == 0, err
    assert "LoRA kohya (kohya, rank 4) at weight 0.3" in err


def _seed_png(tmp_path):
    y, x = np.mgrid[0:512, 0:64]
    Image.fromarray((150 + 50 * np.sin(x / 4.0) * np.cos(y / 19.0)).astype(np.uint8), mode="L").save(tmp_path / "s.png")
    return tmp_path / "s.png"


# ---- minriff lora info ---------------------------------------------------------------------------------
def test_lora_info_text(capsys):
    from collections import Counter

    from safetensors.numpy import load_file

    code, out, err = run(capsys, "lora", "info", ml.KOHYA, "--config", "tiny")
    assert code == 0, err
    sd = load_file(str(ml.KOHYA))
    params = sum(v.size for k, v in sd.items() if not k.endswith(".alpha"))
    ranks = Counter(v.shape[0] for k, v in sd.items() if k.endswith(".lora_down.weight"))
    alphas = Counter(float(v) for k, v in sd.items() if k.endswith(".alpha"))
    assert f"kohya LoRA, {params:,d} parameters (float32)" in out
    assert "ranks:   " + ", ".join(f"{r} ({n} layers)" for r, n in sorted(ranks.items())) + "\n" in out
    assert "alphas:  " + ", ".join(f"{a:g} ({n} layers)" for a, n in sorted(alphas.items())) + "  (scale" in out
    assert "targets: text encoder 12 layers, unet 79 layers" in out
    assert "downsamplers.conv 1" in out and "resnets.time_emb_proj 8" in out and "mlp.fc1 2" in out
    assert "ss_network_module: networks.lora" in out


def test_lora_info_json_verbose_and_unmatched_keys(tmp_path, capsys):
    shapes = layer_shapes(tiny_riff())
    sd = random_kohya(shapes, rank=2, alpha=lambda c, m: 1.0 if c == "unet" else None)
    sd["lora_unet_not_a_layer.lora_down.weight"] = np.ones((2, 3), np.float32)
    path = save(tmp_path / "x.safetensors", sd)
    code, out, err = run(capsys, "lora", "info", path, "--config", "tiny", "--json", "--verbose")
    assert code == 0, err
    info = json.loads(out)
    assert info["format"] == "kohya" and info["ranks"] == {"2": len(shapes)}
    assert info["alphas"] == {"1.0": sum(c == "unet" for c, _ in shapes), "2.0": 12}  # missing alpha = rank
    assert info["unmatched_keys"] == ["lora_unet_not_a_layer.lora_down.weight"]
    assert info["parameters"] == sum(v.size for k, v in sd.items() if "not_a_layer" not in k and "alpha" not in k)
    layer = next(la for la in info["layers"] if la["module"].endswith("downsamplers.0.conv"))
    assert layer["shape"][2:] == [3, 3] and layer["scale"] == 0.5
    code, out, _ = run(capsys, "lora", "info", path, "--weights", mp.WEIGHTS, "--verbose")
    assert code == 0 and "unmatched: 1 keys match no layer" in out
    line = next(ln for ln in out.splitlines() if "unet.down_blocks.0.downsamplers.0.conv " in ln)
    assert "rank    2" in line and "alpha        1" in line and "8x8x3x3" in line


def test_lora_info_of_a_file_for_another_model(capsys):
    code, _, err = run(capsys, "lora", "info", ml.KOHYA)  # the tiny LoRA against SD 1.5's layers
    assert code == 2 and "do not fit" in err and "another model" in err
