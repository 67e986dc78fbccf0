"""Pipeline pieces that need no model: geometry, slerp, masks, request parsing, argument checks."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minriff import inputs, weights
from minriff.audio import join
from minriff.errors import InputError, WeightsError
from minriff.latents import mask_to_latent, model_to_image, slerp
from minriff.progress import Progress
from minriff.riffuse import InferenceInput, resolve_image


# ---- geometry ------------------------------------------------------------------------------------
def test_five_seconds_is_512_px_and_511_hops():
    w = inputs.image_width(5.0)
    assert w == 512
    # The audio of a W-px spectrogram has (W - 1) hops of 441 samples at 44.1 kHz.
    assert round((w - 1) * 441 / 44100, 2) == 5.11


@given(st.floats(min_value=0.01, max_value=inputs.MAX_SECONDS))
def test_width_is_smallest_multiple_of_64_covering_the_duration(seconds):
    w = inputs.image_width(seconds)
    assert w % 64 == 0 and w >= 64
    assert w * 10 >= seconds * 1000 - 1e-6  # at least as long as asked (10 ms per px)
    assert w == 64 or (w - 64) * 10 < seconds * 1000  # and no longer than one step of 64 px more


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), inputs.MAX_SECONDS + 0.5, "5"])
def test_bad_durations(bad):
    with pytest.raises(InputError, match="duration"):
        inputs.image_width(bad)


# ---- argument checks -----------------------------------------------------------------------------
@pytest.mark.parametrize("steps,guidance,sched,match", [
    (0, 7.0, "pndm", "steps"), (2.5, 7.0, "pndm", "steps"), (True, 7.0, "pndm", "steps"),
    (10, -0.1, "pndm", "guidance"), (10, float("nan"), "pndm", "guidance"),
    (10, 7.0, "heun", "unknown scheduler 'heun'"),
])
def test_common_checks(steps, guidance, sched, match):
    with pytest.raises(InputError, match=match):
        inputs.check_steps(steps)
        inputs.check_guidance(guidance)
        inputs.check_scheduler(sched)


@pytest.mark.parametrize("alpha", [-0.01, 1.01, float("nan"), None, True])
def test_alpha_range(alpha):
    with pytest.raises(InputError, match="alpha"):
        inputs.check_alpha(alpha)


@pytest.mark.parametrize("prompt", ["", "   ", None])
def test_empty_prompt(prompt):
    with pytest.raises(InputError, match="empty"):
        inputs.check_prompt(prompt)


# ---- slerp ---------------------------------------------------------------------------------------
vectors = st.integers(0, 2**31 - 1).map(
    lambda s: np.random.default_rng(s).standard_normal((2, 4, 3, 5)).astype(np.float32))


@given(vectors)
def test_slerp_endpoints_exact(v):
    assert np.array_equal(slerp(0.0, v[0], v[1]), v[0])
    assert np.allclose(slerp(1.0, v[0], v[1]), v[1], atol=1e-6)


@given(vectors, st.floats(0, 1))
def test_slerp_stays_on_the_arc(v, alpha):
    # Orthonormal-ish endpoints: the interpolant keeps unit norm and makes angle alpha*theta with v0.
    a = v[0] / np.linalg.norm(v[0])
    b = v[1] - (v[1].ravel() @ a.ravel()) * a
    b = b / np.linalg.norm(b)
    out = slerp(alpha, a, b).astype(np.float64)
    assert np.isclose(np.linalg.norm(out), 1.0, atol=1e-5)
    assert np.isclose(np.arccos(np.clip(out.ravel() @ a.ravel(), -1, 1)), alpha * np.pi / 2, atol=1e-3)


def test_slerp_parallel_falls_back_to_lerp():
    v = np.arange(1, 9, dtype=np.float32)
    assert np.allclose(slerp(0.25, v, 2 * v), 1.25 * v)


# ---- images and masks ----------------------------------------------------------------------------
def test_model_to_image_maps_and_rounds_like_diffusers():
    x = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], np.float32).reshape(1, 1, 1, 6).repeat(3, axis=1)
    img = model_to_image(x)
    assert img.shape == (1, 6, 3) and img.dtype == np.uint8
    # (x/2 + 0.5) clamped to [0, 1], times 255, rounded half to even as numpy/torch do.
    assert img[0, :, 0].tolist() == [0, 0, 128, 191, 255, 255]


def test_mask_black_keeps_white_regenerates():
    mask = np.full((512, 64, 3), 255, np.uint8)
    mask[:256] = 0  # top half black
    m = mask_to_latent(mask, 8)
    assert m.shape == (1, 4, 64, 8)
    assert np.all(m[:, :, :32] == 1.0) and np.all(m[:, :, 32:] == 0.0)


# ---- server request ------------------------------------------------------------------------------
README_REQUEST = {"alpha": 0.75, "num_inference_steps": 50, "seed_image_id": "og_beat",
                  "start": {"prompt": "church bells on sunday", "seed": 42, "denoising": 0.75, "guidance": 7.0},
                  "end": {"prompt": "jazz with piano", "seed": 123, "denoising": 0.75, "guidance": 7.0}}


def test_request_roundtrip_and_defaults():
    req = InferenceInput.from_json(json.dumps(README_REQUEST))
    assert req.alpha == 0.75 and req.start.seed == 42 and req.end.prompt == "jazz with piano"
    assert req.mask_image_id is None and req.start.negative_prompt is None
    minimal = InferenceInput.from_dict({"alpha": 0, "start": {"prompt": "a", "seed": 1},
                                        "end": {"prompt": "b", "seed": 2}})
    assert (minimal.num_inference_steps, minimal.seed_image_id) == (50, "og_beat")
    assert (minimal.start.denoising, minimal.start.guidance) == (0.75, 7.0)


def test_request_accepts_ints_for_floats():
    # The original (dacite) answered HTTP 400 to "guidance": 7 (riffusion-hobby#167).
    d = json.loads(json.dumps(README_REQUEST))
    d["start"]["guidance"] = 7
    d["alpha"] = 1
    req = InferenceInput.from_dict(d)
    assert req.start.guidance == 7.0 and isinstance(req.alpha, float)


@pytest.mark.parametrize("text,match", [
    ("{not json", "malformed JSON"),
    ("[1, 2]", "JSON object"),
    ('{"alpha": 0.5, "end": {"prompt": "b", "seed": 1}}', "'start'"),
    ('{"alpha": 0.5, "start": {"prompt": "a"}, "end": {"prompt": "b", "seed": 1}}',
     "start: missing required field 'seed'"),
    ('{"alpha": 0.5, "start": {"prompt": "a", "seed": 1.5}, "end": {"prompt": "b", "seed": 1}}',
     "'seed' must be an integer"),
    ('{"alpha": "x", "start": {"prompt": "a", "seed": 1}, "end": {"prompt": "b", "seed": 1}}',
     "'alpha' must be a number"),
    ('{"alpha": 0.5, "start": {"prompt": 3, "seed": 1}, "end": {"prompt": "b", "seed": 1}}',
     "'prompt' must be a string"),
    ('{"alpha": 0.5, "start": "a", "end": {"prompt": "b", "seed": 1}}', "start must be a JSON object"),
])
def test_malformed_requests(text, match):
    with pytest.raises(InputError, match=match):
        InferenceInput.from_json(text)


def test_unknown_fields_refused_by_default_ignored_on_request():
    d = {**README_REQUEST, "extra": [1], "start": {**README_REQUEST["start"], "transitionCounter": 3}}
    with pytest.raises(InputError, match="request: unknown field 'extra'"):
        InferenceInput.from_dict(d)
    with pytest.raises(InputError, match="start: unknown field 'transitionCounter'"):
        InferenceInput.from_dict({k: v for k, v in d.items() if k != "extra"})
    req = InferenceInput.from_dict(d, unknown="ignore")
    assert req == InferenceInput.from_dict(README_REQUEST)
    assert InferenceInput.unknown_fields(d) == ["extra", "start.transitionCounter"]
    assert InferenceInput.unknown_fields(README_REQUEST) == []
    with pytest.raises(InputError, match="'guidance' must be a number"):  # known fields stay checked
        InferenceInput.from_dict({**d, "end": {**README_REQUEST["end"], "guidance": "7"}}, unknown="ignore")
    with pytest.raises(ValueError):
        InferenceInput.from_dict(README_REQUEST, unknown="warn")


def test_seed_image_resolution(tmp_path, monkeypatch):
    (tmp_path / "og_beat.png").write_bytes(b"x")
    monkeypatch.setenv("MINRIFF_SEED_IMAGES", str(tmp_path))
    assert resolve_image("og_beat", "seed image") == tmp_path / "og_beat.png"
    assert resolve_image(str(tmp_path / "og_beat.png"), "seed image", allow_path=True) == tmp_path / "og_beat.png"
    with pytest.raises(InputError, match="invalid seed image"):  # a path is not an id (tests/hostile/test_paths.py)
        resolve_image(str(tmp_path / "og_beat.png"), "seed image")
    with pytest.raises(InputError, match="invalid seed image: 'nope'"):
        resolve_image("nope", "seed image")


# ---- finding weights -----------------------------------------------------------------------------
def test_no_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)
    with pytest.raises(WeightsError) as e:
        weights.find_weights()
    for hint in ("minriff download", "minriff convert", "minriff init-random --config tiny"):
        assert hint in str(e.value)


def test_newest_weights_file_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    old, new = tmp_path / "weights" / "a.safetensors", tmp_path / "weights" / "b.safetensors"
    old.write_bytes(b"")
    new.write_bytes(b"")
    now = time.time()
    os.utime(old, (now, now))
    os.utime(new, (now - 100, now - 100))
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)
    assert weights.find_weights().resolve() == old.resolve()
    monkeypatch.setenv("MINRIFF_WEIGHTS", str(new))
    assert weights.find_weights() == new
    assert weights.find_weights(tmp_path / "weights").resolve() == old.resolve()
    with pytest.raises(WeightsError, match="not found"):
        weights.find_weights(tmp_path / "missing.safetensors")


# ---- long spectrograms to audio in overlapping pieces -------------------------------------------
@given(st.integers(2, 20000))
def test_audio_chunks_cover_the_width_with_overlaps(width):
    chunks = join.chunks(width)
    assert chunks[0][0] == 0 and chunks[-1][1] == width
    for a, b in chunks:
        assert b - a <= join.CHUNK_PX and b - a > min(join.OVERLAP_PX, width - 1)
    for (_, b0), (a1, _) in zip(chunks, chunks[1:]):
        assert b0 - a1 == join.OVERLAP_PX


def test_crossfade_of_equal_signals_is_the_signal():
    x = np.random.default_rng(0).standard_normal((2, 1000)).astype(np.float32)
    pieces = [(0, x[:, :600]), (400, x[:, 400:900]), (850, x[:, 850:])]
    assert np.allclose(join.crossfade(pieces, 1000), x, atol=1e-6)
    a, b = np.ones((1, 10), np.float32), np.zeros((1, 10), np.float32)
    out = join.crossfade([(0, a), (5, b)], 15)[0]
    assert out[0] == 1 and np.all(np.diff(out[5:10]) < 0) and np.all(out[10:] == 0)  # fades from a to b


# ---- progress ------------------------------------------------------------------------------------
class _Stream:
    def __init__(self, tty):
        self.text, self._tty = "", tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return self._tty


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar(tty):
    out = _Stream(tty)
    bar = Progress(4, "denoising", stream=out)
    for _ in range(4):
        bar.update()
    last = out.text.rstrip("\n").split("\r")[-1]
    assert last.startswith("denoising [########################] 4/4 ") and out.text.endswith("\n")
    assert out.text.count("\r") == (5 if tty else 1)  # a terminal sees every redraw, a log one line
    quiet = _Stream(tty)
    bar = Progress(2, "x", quiet=True, stream=quiet)
    bar.update(2)
    assert quiet.text == ""
