"""`--preset quality|fast` in `minriff generate`, `interpolate` and `riffuse`, and `minriff.presets`:
each preset expands into the individual flags, every typed flag overrides it, and `fast` without TAESD
weights falls back to the full VAE with a note (tiny random model; tiny TAESD of make_taesd.py)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from minriff import presets
from minriff.cli import build_parser, given_options, main
from minriff.cli.generate import _apply_preset
from minriff.errors import InputError
from minriff.weights import taesd as taesd_weights
from support import fixture_script

make = fixture_script("make_taesd")
pytestmark = pytest.mark.usefixtures("serial_numba")

# what `fast` means, written out here (not read from minriff.presets): the definition plus
# the DeepCache choice documented in minriff/presets.py
FAST = dict(scheduler="lcm", steps=4, guidance=1.0, cache_interval=2, cache_branch=0, cache_schedule="uniform",
            decoder="taesd")
# a typed value per option (differing from the preset's; --decoder full is also the flag default: typed counts)
TYPED = dict(scheduler=("--scheduler", "ddim", "ddim"), steps=("--steps", "7", 7), guidance=("--guidance", "1.5", 1.5),
             cache_interval=("--cache-interval", "3", 3), cache_branch=("--cache-branch", "1", 1),
             cache_schedule=("--cache-schedule", "quadratic", "quadratic"), decoder=("--decoder", "full", "full"))
COMMANDS = {"generate": ["generate", "jazz", "-o", "x.wav"], "interpolate": ["interpolate", "a", "b", "-o", "x.wav"],
            "riffuse": ["riffuse", "--start", "jazz", "-o", "x.wav"]}
ENTRY = {"generate": "generate_spectrogram", "interpolate": "interpolate_styles", "riffuse": "riffuse"}


def parsed(argv: list[str]) -> argparse.Namespace:
    parser = build_parser(only=argv[0])
    args = parser.parse_args(argv)
    args.given = given_options(parser, argv)
    return args


@pytest.mark.parametrize("command", COMMANDS)
def test_fast_expands_into_every_option(command):
    args = parsed(COMMANDS[command] + ["--preset", "fast"])
    _apply_preset(args)
    assert {k: getattr(args, k) for k in FAST} == FAST


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("option", FAST)
def test_a_typed_option_overrides_the_preset(command, option):
    flag, text, value = TYPED[option]
    args = parsed(COMMANDS[command] + ["--preset", "fast", flag, text])
    _apply_preset(args)
    assert getattr(args, option) == value
    assert {k: getattr(args, k) for k in FAST if k != option} == {k: v for k, v in FAST.items() if k != option}


@pytest.mark.parametrize("command", COMMANDS)
def test_quality_is_the_flag_defaults(command):
    plain = parsed(COMMANDS[command])
    quality = parsed(COMMANDS[command] + ["--preset", "quality"])
    _apply_preset(quality)
    assert {k: getattr(quality, k) for k in FAST} == {k: getattr(plain, k) for k in FAST}
    # and the API's quality preset says the same, scheduler None meaning the call's own default
    api = presets.options("quality", ENTRY[command])
    for key in ("steps", "guidance", "cache_interval", "decoder"):
        if key in api:
            assert api[key] == getattr(plain, key) or (key == "cache_interval" and getattr(plain, key) is None)
    assert api["scheduler"] is None and plain.scheduler in (None, {"riffuse": "pndm"}.get(command, "dpmpp2m"))


def test_riffuse_json_keeps_the_request_steps_and_guidance():
    args = parsed(["riffuse", "--json", "req.json", "-o", "x.wav", "--preset", "fast"])
    _apply_preset(args, request_flags=not args.json)
    assert (args.steps, args.guidance) == (50, 7.0)  # the flags' defaults, unused: the request has its own
    assert (args.scheduler, args.decoder, args.cache_interval) == ("lcm", "taesd", 2)


def test_api_options():
    assert presets.options("fast") == FAST
    assert "guidance" not in presets.options("fast", "riffuse")
    assert presets.options("quality", "riffuse")["steps"] == 50
    assert presets.options("fast", steps=6)["steps"] == 6
    for bad in (lambda: presets.options("turbo"), lambda: presets.options("fast", "generate"),
                lambda: presets.options("fast", "riffuse", guidance=1.0), lambda: presets.options("fast", seed=1)):
        with pytest.raises(InputError):
            bad()


# ---- end to end on the tiny model ------------------------------------------------------------------

@pytest.fixture(scope="module")
def taesd_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("taesd") / "taesd.safetensors"
    taesd_weights.convert_taesd(make.DIFFUSERS_DIR, out, log=lambda m: None)
    return str(out)


@pytest.fixture
def no_taesd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./weights/ with a TAESD in it
    monkeypatch.delenv(taesd_weights.ENV, raising=False)


def generate(capsys, tiny, png, *flags) -> tuple[np.ndarray, str]:
    code = main([str(a) for a in ("generate", "jazz", "--seconds", 0.64, "--seed", 4, "--image", png,
                                  "--weights", tiny, "--quiet", *flags)])
    err = capsys.readouterr().err
    assert code == 0, err
    return np.asarray(Image.open(png)), err


EXPANDED = ["--scheduler", "lcm", "--steps", 4, "--guidance", 1, "--cache-interval", 2, "--cache-branch", 0]


def test_fast_is_its_expansion_end_to_end(tiny, taesd_file, tmp_path, capsys, no_taesd):
    fast, _ = generate(capsys, tiny, tmp_path / "fast.png", "--preset", "fast", "--taesd", taesd_file)
    spelled, _ = generate(capsys, tiny, tmp_path / "spelled.png", *EXPANDED, "--decoder", "taesd",
                          "--taesd", taesd_file)
    assert np.array_equal(fast, spelled)
    six, _ = generate(capsys, tiny, tmp_path / "six.png", "--preset", "fast", "--steps", 6, "--taesd", taesd_file)
    assert not np.array_equal(six, fast)
    quality, _ = generate(capsys, tiny, tmp_path / "q.png", "--preset", "quality", "--steps", 2)
    assert np.array_equal(quality, generate(capsys, tiny, tmp_path / "d.png", "--steps", 2)[0])


def test_fast_without_taesd_falls_back_with_a_note(tiny, tmp_path, capsys, no_taesd):
    image, err = generate(capsys, tiny, tmp_path / "fast.png", "--preset", "fast")
    assert "no TAESD weights found" in err and "minriff download --taesd" in err and len(err.splitlines()) == 1
    full, _ = generate(capsys, tiny, tmp_path / "full.png", *EXPANDED)
    assert np.array_equal(image, full)
    code = main(["generate", "jazz", "--image", str(tmp_path / "t.png"), "--weights", tiny, "--quiet",
                 "--preset", "fast", "--decoder", "taesd"])  # typed: no fallback
    assert code == 2 and "minriff download --taesd" in capsys.readouterr().err


def test_fast_preset_on_interpolate_and_riffuse(tiny, taesd_file, tmp_path, capsys):
    code = main([str(a) for a in ("interpolate", "bells", "jazz", "--frames", 2, "--seconds", 0.64, "--preset", "fast",
                                  "--taesd", taesd_file, "-o", tmp_path / "m.wav", "--weights", tiny, "--quiet")])
    assert code == 0, capsys.readouterr().err
    Image.fromarray(np.full((512, 64), 160, np.uint8)).save(tmp_path / "seed.png")
    images = []
    for flags in (["--preset", "fast"], EXPANDED + ["--decoder", "taesd"]):
        png = tmp_path / f"r{len(images)}.png"
        code = main([str(a) for a in ("riffuse", "--start", "bells", "--seed-image", tmp_path / "seed.png",
                                      "--image", png, "--taesd", taesd_file, "--weights", tiny, "--quiet", *flags)])
        assert code == 0, capsys.readouterr().err
        images.append(np.asarray(Image.open(png)))
    assert np.array_equal(*images)
