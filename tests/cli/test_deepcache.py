"""`--cache-interval`, `--cache-branch` and `--cache-schedule` (DeepCache) in `minriff generate`,
`interpolate` and `riffuse`, and `minriff bench unet --cache-branch` (tiny random model)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from minriff.cli import main

pytestmark = pytest.mark.usefixtures("serial_numba")


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def generate(capsys, tiny, png, *flags):
    code, err = run(capsys, "generate", "jazz", "--seconds", 0.64, "--steps", 6, "--seed", 4, "--image", png,
                    "--weights", tiny, "--quiet", *flags)
    assert code == 0, err
    return np.asarray(Image.open(png))


def test_generate_cache_flags(tiny, tmp_path, capsys):
    plain = generate(capsys, tiny, tmp_path / "plain.png")
    every = generate(capsys, tiny, tmp_path / "every.png", "--cache-interval", 1, "--cache-branch", 3)
    cached = generate(capsys, tiny, tmp_path / "c.png", "--cache-interval", 3)
    branch0 = generate(capsys, tiny, tmp_path / "c0.png", "--cache-interval", 3, "--cache-branch", 0)
    branch2 = generate(capsys, tiny, tmp_path / "c2.png", "--cache-interval", 3, "--cache-branch", 2)
    quad = generate(capsys, tiny, tmp_path / "q.png", "--cache-interval", 3, "--cache-schedule", "quadratic")
    assert np.array_equal(every, plain)  # interval 1: every step full
    assert np.array_equal(cached, branch0)  # branch 0 is the default
    for other in (cached, branch2, quad):
        assert not np.array_equal(other, plain)
    assert not np.array_equal(branch2, cached) and not np.array_equal(quad, cached)


def test_interpolate_and_riffuse_take_the_cache_flags(tiny, tmp_path, capsys):
    code, err = run(capsys, "interpolate", "bells", "jazz", "--frames", 2, "--seconds", 0.64, "--steps", 4,
                    "--cache-interval", 2, "--cache-branch", 1, "-o", tmp_path / "m.wav", "--weights", tiny, "--quiet")
    assert code == 0, err
    Image.fromarray(np.full((512, 64), 160, np.uint8)).save(tmp_path / "seed.png")
    images = []
    for flags in ([], ["--cache-interval", 2, "--cache-schedule", "quadratic"]):
        code, err = run(capsys, "riffuse", "--start", "bells", "--seed-image", tmp_path / "seed.png", "--steps", 6,
                        "--image", tmp_path / "r.png", "--weights", tiny, "--quiet", *flags)
        assert code == 0, err
        images.append(np.asarray(Image.open(tmp_path / "r.png")))
    assert images[0].shape == (512, 64, 3) and not np.array_equal(*images)


@pytest.mark.parametrize("command, flags, message", [
    ("generate", ["--cache-branch", 1], "--cache-branch has no effect without --cache-interval"),
    ("interpolate", ["--cache-schedule", "quadratic"], "--cache-schedule has no effect without --cache-interval"),
    ("riffuse", ["--cache-branch", 0], "--cache-branch has no effect without --cache-interval"),
    ("generate", ["--cache-interval", 0], "cache interval must be an integer >= 1, got 0"),
    ("riffuse", ["--cache-interval", 2, "--cache-branch", -2], "cache branch must be an integer >= 0, got -2"),
    ("generate", ["--cache-interval", 2, "--cache-branch", 4], "cache branch must be from 0 to 3 for this UNet, got 4"),
])
def test_bad_cache_flags_are_one_line_errors(tiny, tmp_path, capsys, command, flags, message):
    args = {"generate": ["jazz", "--image", tmp_path / "x.png"],
            "interpolate": ["a", "b", "-o", tmp_path / "x.wav"],
            "riffuse": ["--start", "a", "--image", tmp_path / "x.png"]}[command]
    code, err = run(capsys, command, *args, *flags, "--weights", tiny, "--quiet")
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_help_tells_the_flags(capsys):
    with pytest.raises(SystemExit):
        main(["riffuse", "--help"])
    out = capsys.readouterr().out
    assert "--cache-interval N" in out and "--cache-branch B" in out and "{uniform,quadratic}" in out


def test_bench_unet_cache_branches(tiny, capsys):
    assert main(["bench", "unet", "--quick", "--json", "--repeat", "3", "--weights", tiny,
                 "--cache-branch", "0", "3", "0"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    steps = [r["step"] for r in report["rows"]]
    assert steps == ["full", "full + cache (branch 0)", "cached, branch 0", "cached, branch 3"]
    assert report["branches"] == 4 and report["batch"] == 2
    for row in report["rows"][2:]:
        assert row["same_as_full"] is True and row["seconds"] > 0
        assert row["ratio_to_full"] == pytest.approx(row["seconds"] / report["rows"][0]["seconds"])
    code, err = run(capsys, "bench", "unet", "--quick", "--weights", tiny, "--cache-branch", "9")
    assert code == 2 and "--cache-branch 9: this UNet has branches 0 to 3" in err
    for argv, message in ((["bench", "vae", "--cache-branch", "0"], "--cache-branch has no effect on `bench vae`"),
                          (["bench", "unet", "--cache-branch", "0", "--profile"],
                           "--profile has no effect with --cache-branch")):
        code, err = run(capsys, *argv, "--quick", "--weights", tiny)
        assert code == 2 and message in err and err.count("\n") == 1, err
