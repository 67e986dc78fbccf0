"""`--control CONTROLNET:SOURCE[:SCALE]`, `--control-start/--control-end/--guess-mode` in `minriff
generate`, `interpolate` and `riffuse` (the tiny SD and ControlNet A of tests/fixtures/make_controlnet.py,
plain image sources; PREP:AUDIO sources need minriff.audio.controlmaps, merged from another branch)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from minriff import Riffusion
from minriff.cli import main
from minriff.cli.controlnet import parse_spec
from minriff.errors import InputError
from minriff.weights.controlnet import convert_controlnet, load_controlnet
from support import FIXTURES, fixture_script

make = fixture_script("make_controlnet")
WEIGHTS = FIXTURES / "pipeline" / "tiny_sd.safetensors"
pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cn")
    convert_controlnet(make.A_DIFFUSERS, tmp / "a.safetensors", log=lambda m: None)
    Image.fromarray(make.control_image("edges", 64)).save(tmp / "edges.png")
    Image.fromarray(make.control_image("blobs", 32, 256)).save(tmp / "blobs_small.png")
    return tmp


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def generate(capsys, png, *flags):
    code, err = run(capsys, "generate", "jazz", "--seconds", 0.64, "--steps", 3, "--seed", 4, "--image", png,
                    "--weights", WEIGHTS, "--quiet", *flags)
    assert code == 0, err
    return np.asarray(Image.open(png))


def test_parse_spec():
    assert parse_spec("cn.safetensors:edges.png") == ("cn.safetensors", None, "edges.png", 1.0)
    assert parse_spec("cn.safetensors:edges.png:0.5") == ("cn.safetensors", None, "edges.png", 0.5)
    assert parse_spec("cn.st:canny:clip.wav") == ("cn.st", "canny", "clip.wav", 1.0)
    assert parse_spec("cn.st:melody:song.png:1.5") == ("cn.st", "melody", "song.png", 1.5)
    assert parse_spec("cn.st:rhythm:c.wav") == ("cn.st", "rhythm", "c.wav", 1.0)
    for bad in ("cn.safetensors", "cn.safetensors:", ":x.png"):
        with pytest.raises(InputError, match="CONTROLNET_FILE:SOURCE"):
            parse_spec(bad)


def test_generate_with_control_is_the_api_call(files, tmp_path, capsys):
    png = generate(capsys, tmp_path / "c.png", "--control", f"{files / 'a.safetensors'}:{files / 'edges.png'}:0.5",
                   "--control", f"{files / 'a.safetensors'}:{files / 'blobs_small.png'}", "--guess-mode",
                   "--control-end", "0.7")
    riff = Riffusion.load(WEIGHTS, quiet=True)
    net = load_controlnet(files / "a.safetensors")
    want = riff.generate_spectrogram(
        "jazz", duration_s=0.64, steps=3, seed=4,
        controls=[(net, make.control_image("edges", 64), 0.5), (net, make.control_image("blobs", 32, 256), 1.0)],
        guess_mode=True, control_end=0.7)
    assert np.array_equal(png, want)
    assert not np.array_equal(png, generate(capsys, tmp_path / "p.png"))


def test_interpolate_and_riffuse_take_control(files, tmp_path, capsys):
    spec = f"{files / 'a.safetensors'}:{files / 'edges.png'}"
    code, err = run(capsys, "interpolate", "bells", "jazz", "--frames", 2, "--seconds", 0.64, "--steps", 2,
                    "--control", spec, "-o", tmp_path / "m.wav", "--weights", WEIGHTS, "--quiet")
    assert code == 0, err
    Image.fromarray(np.full((512, 64), 160, np.uint8)).save(tmp_path / "seed.png")
    code, err = run(capsys, "riffuse", "--start", "rock", "--seed-image", tmp_path / "seed.png", "--steps", 3,
                    "--control", spec, "--control-start", 0.3, "--image", tmp_path / "r.png", "--weights", WEIGHTS,
                    "--quiet")
    assert code == 0, err


@pytest.mark.parametrize("flags, message", [
    (["--control-start", "0.2"], "--control-start has no effect without --control"),
    (["--guess-mode"], "--guess-mode has no effect without --control"),
    (["--control", "{cn}:{img}", "--control-start", "0.9", "--control-end", "0.5"], "control start"),
    (["--control", "{cn}:missing.png"], "missing.png"),
    (["--control", "{img}:{img}"], "not a minriff ControlNet file"),
    (["--control", "{cn}:{img}", "--cache-interval", "2"], "DeepCache"),
    (["--control", "{cn}:{img}", "--seconds", "40"], "one clip"),
])
def test_refused_before_any_work(files, tmp_path, capsys, flags, message):
    flags = [f.format(cn=files / "a.safetensors", img=files / "edges.png") for f in flags]
    code, err = run(capsys, "generate", "jazz", "--image", tmp_path / "x.png", "--weights", WEIGHTS, "--quiet",
                    *flags)
    assert code == 2 and message in err, err
    assert not (tmp_path / "x.png").exists()


def test_preset_fast_drops_its_deepcache_for_a_control(files, tmp_path, capsys):
    code, err = run(capsys, "generate", "jazz", "--seconds", 0.64, "--steps", 2, "--preset", "fast", "--image",
                    tmp_path / "f.png", "--weights", WEIGHTS, "--control",
                    f"{files / 'a.safetensors'}:{files / 'edges.png'}")
    assert code == 0, err
    assert "without DeepCache" in err


def test_bench_unet_controlnet(tiny, files, capsys):
    assert main(["bench", "unet", "--quick", "--json", "--repeat", "3", "--weights", tiny, "--controlnet"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    assert [r["step"] for r in report["rows"]] == ["plain", "controlled", "controlled, guess mode", "controlnet only",
                                                   "hint embedding (once per run)"]
    assert report["controlnet"] == "random tiny ControlNet shapes" and report["hint"] == "256x256"
    assert report["max_rel_change_by_the_controlnet"] > 0.01
    for row in report["rows"]:
        assert row["ratio_to_plain"] == pytest.approx(row["seconds"] / report["rows"][0]["seconds"])
    assert main(["bench", "unet", "--quick", "--json", "--repeat", "3", "--weights", tiny, "--controlnet",
                 str(files / "a.safetensors")]) == 0
    assert "file " in capsys.readouterr().out
    code, err = run(capsys, "bench", "vae", "--quick", "--controlnet")
    assert code == 2 and "--controlnet has no effect on `bench vae`" in err


@pytest.mark.parametrize("prep", ["canny", "rhythm", "melody"])
def test_prep_audio_source_is_the_control_image_command(files, tmp_path, capsys, prep):
    """--control CN:PREP:clip.wav steers with the map `minriff control-image PREP clip.wav --width W`
    writes (W: the clip's width), the same image as --control CN:that.png."""
    import soundfile as sf

    t = np.arange(44100) / 44100
    tone = 0.3 * np.sin(2 * np.pi * (300 + 400 * t) * t) * (np.mod(t, 0.25) < 0.08)
    sf.write(tmp_path / "clip.wav", tone.astype(np.float32), 44100)
    code, err = run(capsys, "control-image", prep, tmp_path / "clip.wav", "-o", tmp_path / "map.png", "--width", 64,
                    "--quiet")
    assert code == 0, err
    cn = files / "a.safetensors"
    via_prep = generate(capsys, tmp_path / "a.png", "--control", f"{cn}:{prep}:{tmp_path / 'clip.wav'}:0.8")
    via_png = generate(capsys, tmp_path / "b.png", "--control", f"{cn}:{tmp_path / 'map.png'}:0.8")
    assert np.array_equal(via_prep, via_png)
    assert np.asarray(Image.open(tmp_path / "map.png")).max() == 255  # the map has something in it
