"""`--decoder taesd|full`, `--encoder`, `--taesd FILE` in `minriff generate`, `interpolate` and `riffuse`
(the tiny random SD with the tiny TAESD of tests/fixtures/make_taesd.py)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from minriff import Riffusion
from minriff.cli import main
from minriff.weights import taesd as taesd_weights
from support import FIXTURES, fixture_script

make = fixture_script("make_taesd")
WEIGHTS = FIXTURES / "pipeline" / "tiny_sd.safetensors"
pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.fixture(scope="module")
def taesd_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("taesd") / "taesd.safetensors"
    taesd_weights.convert_taesd(make.DIFFUSERS_DIR, out, log=lambda m: None)
    return out


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def generate(capsys, png, *flags):
    code, err = run(capsys, "generate", "jazz", "--seconds", 0.64, "--steps", 2, "--seed", 4, "--image", png,
                    "--weights", WEIGHTS, "--quiet", *flags)
    assert code == 0, err
    return np.asarray(Image.open(png))


def test_generate_decoder_flag_is_the_api_choice(taesd_file, tmp_path, capsys):
    fast = generate(capsys, tmp_path / "fast.png", "--decoder", "taesd", "--taesd", taesd_file)
    full = generate(capsys, tmp_path / "full.png")
    assert np.array_equal(full, generate(capsys, tmp_path / "full2.png", "--decoder", "full", "--taesd", taesd_file))
    riff = Riffusion.load(WEIGHTS, quiet=True, taesd=taesd_file)
    assert np.array_equal(fast, riff.generate_spectrogram("jazz", duration_s=0.64, steps=2, seed=4, decoder="taesd"))
    assert not np.array_equal(fast, full)


def test_taesd_found_through_the_environment(taesd_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(taesd_weights.ENV, str(taesd_file))
    a = generate(capsys, tmp_path / "a.png", "--decoder", "taesd")
    assert np.array_equal(a, generate(capsys, tmp_path / "b.png", "--decoder", "taesd", "--taesd", taesd_file))


def test_interpolate_and_riffuse_take_the_flags(taesd_file, tmp_path, capsys):
    code, err = run(capsys, "interpolate", "bells", "jazz", "--frames", 2, "--seconds", 0.64, "--steps", 2,
                    "--decoder", "taesd", "--taesd", taesd_file, "-o", tmp_path / "m.wav", "--weights", WEIGHTS,
                    "--quiet")
    assert code == 0, err
    Image.fromarray(np.full((512, 64), 160, np.uint8)).save(tmp_path / "seed.png")
    images = []
    for flags in ([], ["--encoder", "taesd"], ["--encoder", "taesd", "--decoder", "taesd"]):
        code, err = run(capsys, "riffuse", "--start", "bells", "--seed-image", tmp_path / "seed.png", "--steps", 4,
                        "--image", tmp_path / "r.png", "--weights", WEIGHTS, "--taesd", taesd_file, "--quiet", *flags)
        assert code == 0, err
        images.append(np.asarray(Image.open(tmp_path / "r.png")))
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])


def test_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(taesd_weights.ENV, raising=False)
    code, err = run(capsys, "generate", "jazz", "--seconds", 0.64, "--steps", 1, "--decoder", "taesd",
                    "--image", tmp_path / "x.png", "--weights", WEIGHTS, "--quiet")
    assert code == 2 and err.count("\n") == 1 and "minriff download --taesd" in err
    code, err = run(capsys, "generate", "jazz", "--decoder", "taesd", "--taesd", WEIGHTS, "--image", tmp_path / "x.png",
                    "--weights", WEIGHTS, "--quiet")
    assert code == 2 and "not a minriff TAESD file" in err
    with pytest.raises(SystemExit) as e:
        main(["generate", "jazz", "--decoder", "small", "--image", str(tmp_path / "x.png")])
    assert e.value.code == 2
