"""No silent nonsense (issue 13, cause 7): a value minriff cannot use well is an error, never
noise written with exit 0, an option quietly ignored, or pixels clipped. Numbers of every Python
and NumPy type are judged by their value alone; bools, NaN and infinity never pass."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from minriff import inputs
from minriff.cli import COMMANDS, main
from minriff.errors import InputError, MinriffError
from support.hostile import png_bytes

pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.fixture(scope="module")
def riff():
    from minriff import Riffusion
    from minriff.models import random_models

    return Riffusion(random_models("tiny"), quiet=True)


# ---- numbers: every type judged by its value ---------------------------------------------------------
FLOAT_TYPES = [float, np.float16, np.float32, np.float64, lambda v: np.array(v)]
INT_TYPES = [int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def _cast(kind, v):
    try:
        with np.errstate(all="ignore"):
            x = kind(v)
    except (OverflowError, ValueError):
        return None
    return x if kind in (float, int) or float(x) == float(v) or np.isnan(float(x)) else None  # exact casts only


numbers = st.one_of(
    st.tuples(st.sampled_from(FLOAT_TYPES), st.floats(allow_nan=True, allow_infinity=True)),
    st.tuples(st.sampled_from(FLOAT_TYPES), st.floats(-2, 120)),
    st.tuples(st.sampled_from(INT_TYPES), st.integers(-(2**64), 2**65)),
    st.tuples(st.sampled_from(INT_TYPES), st.integers(-3, 1100)),
).map(lambda kv: _cast(*kv)).filter(lambda x: x is not None)
others = st.sampled_from([True, False, np.bool_(True), "5", "abc", None, [1.0], b"1", 1 + 0j])

# check -> (accepts integers only, lowest, highest, lowest excluded)
RANGES = {
    "check_duration": (False, 0.0, 30.0, True), "check_guidance": (False, 0.0, 100.0, False),
    "check_alpha": (False, 0.0, 1.0, False), "check_strength": (False, 0.0, 1.0, True),
    "check_steps": (True, 1, 1000, False), "check_seed": (True, -(2**63), 2**64 - 1, False),
    "check_frames": (True, 2, 100, False),
}


@settings(max_examples=400, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.sampled_from(sorted(RANGES)), st.one_of(numbers, others))
def test_every_numeric_check_judges_the_value_not_the_type(name, x):
    integral, lo, hi, lo_open = RANGES[name]
    is_bool = isinstance(x, (bool, np.bool_))
    is_int = isinstance(x, (int, np.integer)) and not is_bool
    is_num = is_int or (isinstance(x, (float, np.floating)) or (isinstance(x, np.ndarray) and x.dtype.kind == "f"))
    v = (int(x) if integral and is_int else float(x)) if is_num else None  # ints compared exactly
    ok = (is_int if integral else is_num) and np.isfinite(float(v)) and (lo < v if lo_open else lo <= v) and v <= hi
    if ok:
        got = getattr(inputs, name)(x)
        assert type(got) is (int if integral else float) and got == (int(x) if integral else float(x))
    else:
        with pytest.raises(InputError):
            getattr(inputs, name)(x)


def test_numpy_scalars_work_through_the_api(riff):
    a = riff.generate_spectrogram("x", duration_s=np.float32(0.64), steps=np.int64(1), guidance=np.float32(7.0),
                                  seed=np.uint32(3))
    b = riff.generate_spectrogram("x", duration_s=0.64, steps=1, guidance=7.0, seed=3)
    assert np.array_equal(a, b)
    c = riff.interpolate_styles("a", "b", np.float32(0.5), seed_a=np.int64(1), duration_s=np.float64(0.64), steps=1)
    assert np.array_equal(c, riff.interpolate_styles("a", "b", 0.5, seed_a=1, duration_s=0.64, steps=1))


@pytest.mark.parametrize("seed", ["abc", float("nan"), 1.5, True, 2**64, [1]])
def test_bad_seeds_are_input_errors_on_every_entry_point(riff, seed):
    from minriff import Riffusion
    from minriff.riffuse import PromptInput

    seed_image = np.full((512, 64, 3), 200, np.uint8)
    calls = [lambda: riff.generate_spectrogram("x", steps=1, duration_s=0.64, seed=seed),
             lambda: riff.interpolate_styles("a", "b", 0.5, seed_a=seed, steps=1, duration_s=0.64),
             lambda: riff.interpolate_styles("a", "b", 0.5, seed_a=1, seed_b=seed, steps=1, duration_s=0.64),
             lambda: riff.riffuse({"prompt": "a", "seed": seed}, {"prompt": "b", "seed": 1}, 0.5, seed_image, steps=1),
             lambda: riff.riffuse(PromptInput("a", seed), PromptInput("b", 1), 0.5, seed_image, steps=1),
             lambda: Riffusion(riff_parts(riff), seed=seed)]
    for call in calls:
        with pytest.raises(InputError, match="seed"):
            call()


def riff_parts(riff) -> dict:
    return {"text_encoder": riff.text_encoder, "unet": riff.unet, "vae": riff.vae, "tokenizer": riff.tokenizer}


# ---- prompt weights ----------------------------------------------------------------------------------
weights = st.one_of(st.floats(0, 1e45), st.sampled_from([1e39, 3.5e38, 1e30, 100.0, 100.5, 0.0, 1.5]))


@settings(max_examples=60, deadline=None)
@given(weights, st.integers(0, 80), st.booleans())
def test_prompt_weights_give_finite_text_states_or_an_input_error(riff, weight, depth, negative):
    from minriff import prompt_weighting

    prompt = "(" * depth + f"jazz:{'-' if negative else ''}{weight:f})" + ")" * depth + " piano"
    try:
        spans = prompt_weighting.parse(prompt)
    except InputError:
        return
    assert all(abs(w) <= 100 for _, w in spans)
    try:
        states = riff.encode_prompt(prompt)
    except InputError:
        return
    assert np.isfinite(states).all()


def test_an_overflowing_weight_writes_nothing(tiny, tmp_path, capsys):
    out = tmp_path / "noise.wav"
    code = main(["generate", "(jazz:" + "1" + "0" * 39 + ")", "--seconds", "0.64", "--steps", "1", "-o", str(out),
                 "--weights", tiny, "--quiet"])
    assert code == 2 and "weight" in capsys.readouterr().err and not out.exists()


class NaNScheduler:
    """A scheduler object whose steps produce NaN (what an overflow anywhere in a run looks like)."""

    init_noise_sigma = 1.0
    timesteps = [999]

    def set_timesteps(self, n):
        self.timesteps = list(range(999, 0, -999 // n))[:n]

    def scale_model_input(self, x, t):
        return x

    def step(self, eps, t, x, generator=None):
        return np.full_like(x, np.nan)


def test_nan_latents_are_refused_not_decoded_into_noise(riff):
    with pytest.raises(MinriffError, match="NaN"):
        riff.generate_spectrogram("x", duration_s=0.64, steps=2, scheduler=NaNScheduler())


# ---- options that would be ignored -------------------------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["generate", "x", "--strength", "0.5"], "--strength has no effect without --init-image"),
    (["interpolate", "a", "b", "--denoising", "0.5"], "--denoising has no effect without --seed-image"),
    (["interpolate", "a", "b", "--seed-images", "."], "--seed-images has no effect without --seed-image"),
    (["generate", "x", "--init-image", "i.png", "--seconds", "10"], "--seconds has no effect with --init-image"),
    (["riffuse", "--json", "r.json", "--alpha", "0.2"], "--alpha has no effect with --json"),
    (["riffuse", "--json", "r.json", "--steps", "20"], "--steps has no effect with --json"),
    (["generate", "x", "--image", "x.png", "--format", "mp3"], "--format has no effect without --output"),
    (["bench", "ops", "--profile"], "--profile has no effect on `bench ops`"),
    (["bench", "ops", "--repeat", "0"], "--repeat must be an integer from 1 to 1,000"),
    (["bench", "audio", "--repeat", "-3"], "--repeat must be an integer from 1 to 1,000"),
])
def test_an_option_that_would_be_ignored_is_an_error(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    if "-o" not in argv and argv[0] in ("generate", "interpolate") and "--image" not in argv:
        argv = [*argv, "-o", "o.wav"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_every_declared_option_rule_is_enforced(tmp_path, monkeypatch, capsys):
    """The mechanism, for every rule a command declares (the table above checks the rules exist)."""
    from minriff.cli import _flag, _resolve, build_parser

    monkeypatch.chdir(tmp_path)
    positionals = {"generate": ["x", "-o", "o.wav"], "interpolate": ["a", "b", "-o", "o.wav"],
                   "riffuse": ["-o", "o.wav"], "batch": ["jobs.jsonl", "-o", "out"]}
    sample = {"init_image": "i.png", "seed_image": "s.png", "json": "r.json", "output": "o.wav", "format": "wav",
              "method": "nnls", "seed_images": ".", "start_prompt": "a", "end_prompt": "b", "negative": "n",
              "mask": "m.png", "steps": "3", "start_seed": "1", "end_seed": "2", "cache_branch": "1",
              "cache_schedule": "quadratic", "ray_cpus": "1"}

    def value(parser, dest) -> list[str]:  # none for a switch (--guess-mode)
        action = next(a for a in parser.command_parser._actions if a.dest == dest)
        return [] if action.nargs == 0 else [sample.get(dest, "0.5")]

    checked = 0
    for name, (target, _) in COMMANDS.items():
        command, parser = _resolve(target), build_parser(only=name)
        for kind in ("needs", "excludes"):
            for opt, other in getattr(command, kind, {}).items():
                argv = [name, *positionals.get(name, []), _flag(parser, opt), *value(parser, opt)]
                if kind == "excludes":
                    argv += [_flag(parser, other), *value(parser, other)]
                elif other == "output":
                    argv = [a for a in argv if a not in ("-o", "o.wav")]
                assert main(argv) == 2, argv
                assert "has no effect" in capsys.readouterr().err, argv
                checked += 1
    assert checked >= 15


def test_an_option_that_has_its_effect_is_accepted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no weights: the run gets as far as loading them
    Image.fromarray(np.full((512, 64), 200, np.uint8)).save(tmp_path / "i.png")
    for argv in (["generate", "x", "--init-image", "i.png", "--strength", "0.5", "-o", "o.wav"],
                 ["interpolate", "a", "b", "--seed-image", "i.png", "--denoising", "0.5", "-o", "o.wav"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "has no effect" not in err and "weights" in err.lower(), err


# ---- deeper images are scaled, not clipped -----------------------------------------------------------
def _encodings(x: np.ndarray):
    """The same 8-bit picture x (H, W) as 16-bit and float images of every kind minriff reads."""
    x16 = x.astype(np.uint16) * 257
    for name, data in (("16-bit grey PNG", png_bytes(x16, 16, 0)),
                       ("16-bit RGB PNG", png_bytes(np.stack([x16] * 3, -1), 16, 2)),
                       ("16-bit RGBA PNG", png_bytes(np.stack([x16] * 3 + [np.full_like(x16, 65535)], -1), 16, 6)),
                       ("16-bit grey+alpha PNG", png_bytes(np.stack([x16, x16], -1), 16, 4))):
        yield name, Image.open(io.BytesIO(data))
    yield "mode I", Image.fromarray(x16.astype(np.int32))
    yield "mode F", Image.fromarray((x / 255.0).astype(np.float32))
    yield "uint16 array", x16
    yield "float32 array", (x / 255.0).astype(np.float32)
    yield "float64 RGB array", np.stack([x / 255.0] * 3, -1)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 40))
def test_16_bit_and_float_images_read_as_the_8_bit_picture(seed, height, width):
    from minriff.images import rgb8

    x = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    want = np.repeat(x[..., None], 3, axis=2)
    for name, image in _encodings(x):
        assert np.array_equal(rgb8(image), want), name


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_any_16_bit_value_maps_to_the_nearest_8_bit_levels(seed):
    from minriff.images import rgb8

    v = np.random.default_rng(seed).integers(0, 65536, (16, 16), dtype=np.uint16)
    for image in (Image.open(io.BytesIO(png_bytes(v, 16, 0))), v):
        got = rgb8(image)[..., 0].astype(float)
        assert np.abs(got - v / 257.0).max() <= 1.0  # full scale to full scale, within one level


def test_spectrogram_readers_and_seed_images_scale_16_bit(tmp_path, riff, capsys):
    from minriff.audio import spectrogram

    y, x = np.mgrid[0:512, 0:64]
    grey = (120 + 100 * np.sin(x / 3.0) * np.cos(y / 31.0)).astype(np.uint8)
    eight, sixteen = tmp_path / "8.png", tmp_path / "16.png"
    Image.fromarray(grey).save(eight)
    sixteen.write_bytes(png_bytes(grey.astype(np.uint16) * 257, 16, 0))
    with Image.open(eight) as a, Image.open(sixteen) as b:
        assert np.array_equal(spectrogram.image_to_mel(a), spectrogram.image_to_mel(b))
        assert np.array_equal(riff.check_image(b), riff.check_image(a))
    for png in (eight, sixteen):
        assert main(["image2audio", str(png), "-o", str(png.with_suffix(".wav")), "--iters", "2", "--quiet"]) == 0
    assert eight.with_suffix(".wav").read_bytes() == sixteen.with_suffix(".wav").read_bytes()
    assert np.array_equal(inputs.open_model_image(sixteen), inputs.open_model_image(eight))
