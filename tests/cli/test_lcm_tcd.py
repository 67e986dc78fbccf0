"""`--scheduler lcm|tcd` and `--tcd-gamma` in `minriff generate`, `interpolate` and `riffuse` (tiny random
model: the pictures are noise, every stage runs)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from minriff.cli import main

pytestmark = pytest.mark.usefixtures("serial_numba")


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def generate(capsys, tiny, png, *flags):
    code, err = run(capsys, "generate", "jazz", "--seconds", 0.64, "--steps", 3, "--guidance", 1, "--seed", 4,
                    "--image", png, "--weights", tiny, "--quiet", *flags)
    assert code == 0, err
    return np.asarray(Image.open(png))


def test_generate_with_lcm_and_tcd_and_the_gamma_flag(tiny, tmp_path, capsys):
    lcm = generate(capsys, tiny, tmp_path / "lcm.png", "--scheduler", "lcm")
    tcd = generate(capsys, tiny, tmp_path / "tcd.png", "--scheduler", "tcd")
    tcd_default = generate(capsys, tiny, tmp_path / "tcd03.png", "--scheduler", "tcd", "--tcd-gamma", 0.3)
    tcd_0 = generate(capsys, tiny, tmp_path / "tcd0.png", "--scheduler", "tcd", "--tcd-gamma", 0)
    assert lcm.shape == (512, 64, 3)
    assert np.array_equal(tcd, tcd_default)  # 0.3 is the default
    assert not np.array_equal(tcd, tcd_0) and not np.array_equal(tcd, lcm)


def test_interpolate_and_riffuse_take_the_new_schedulers(tiny, tmp_path, capsys):
    code, err = run(capsys, "interpolate", "bells", "jazz", "--frames", 2, "--seconds", 0.64, "--steps", 2,
                    "--guidance", 1, "--scheduler", "tcd", "--tcd-gamma", 0.5, "-o", tmp_path / "m.wav",
                    "--weights", tiny, "--quiet")
    assert code == 0, err
    Image.fromarray(np.full((512, 64), 160, np.uint8)).save(tmp_path / "seed.png")
    for flags in (["--scheduler", "lcm"], ["--scheduler", "tcd", "--tcd-gamma", 0]):
        code, err = run(capsys, "riffuse", "--start", "bells", "--seed-image", tmp_path / "seed.png", "--steps", 4,
                        "--guidance", 1, "--image", tmp_path / "r.png", "--weights", tiny, "--quiet", *flags)
        assert code == 0, err
        assert Image.open(tmp_path / "r.png").size == (64, 512)


@pytest.mark.parametrize("command, flags, message", [
    ("generate", ["--tcd-gamma", 0.3], "--tcd-gamma needs --scheduler tcd (got dpmpp2m)"),
    ("generate", ["--scheduler", "lcm", "--tcd-gamma", 0.3], "--tcd-gamma needs --scheduler tcd (got lcm)"),
    ("interpolate", ["--tcd-gamma", 0.3], "--tcd-gamma needs --scheduler tcd (got the default scheduler)"),
    ("generate", ["--scheduler", "tcd", "--tcd-gamma", 1.5], "gamma (eta) must be a number in [0, 1]"),
    ("riffuse", ["--scheduler", "tcd", "--tcd-gamma", -1], "gamma (eta) must be a number in [0, 1]"),
    ("generate", ["--scheduler", "lcm", "--steps", 60], "candidate timesteps"),
])
def test_bad_scheduler_flags_are_one_line_errors(tiny, tmp_path, capsys, command, flags, message):
    args = {"generate": ["jazz", "--image", tmp_path / "x.png"],
            "interpolate": ["a", "b", "-o", tmp_path / "x.wav"],
            "riffuse": ["--start", "a", "--image", tmp_path / "x.png"]}[command]
    code, err = run(capsys, command, *args, *flags, "--weights", tiny, "--quiet")
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_help_lists_the_schedulers_and_the_flag(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "lcm|tcd" in out and "--tcd-gamma" in out and "default 0.3" in out
