"""TAESD in the pipeline: `decoder=` / `encoder=` (per call and at construction), `decode_preview`,
the tiny autoencoder found or refused, against diffusers' `StableDiffusionPipeline(vae=AutoencoderTiny)`
and its img2img pipeline on the tiny random SD (tests/fixtures/make_taesd.py; `pytest -m oracle`
runs diffusers live). Acceptance: images within 1/255 on >= 99 % of pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minriff import Riffusion
from minriff.configs import TAESDConfig
from minriff.errors import InputError, WeightsError
from minriff.latents import image_to_model
from minriff.models import random_taesd
from minriff.rng import Generator
from minriff.weights import taesd as taesd_weights
from support import fixture_script, oracle

make = fixture_script("make_taesd")
base = make.base

pytestmark = pytest.mark.usefixtures("serial_numba")
KW = dict(duration_s=0.64, steps=2, guidance=7.0, seed=5)
A = {"prompt": "rock guitar", "seed": 5, "denoising": 0.75, "guidance": 7.0}
B = {"prompt": "calm violin", "seed": 9, "denoising": 0.75, "guidance": 7.0}


def assert_close_images(got, want, what=""):
    assert got.shape == want.shape and got.dtype == np.uint8
    close = np.mean(np.abs(got.astype(int) - want.astype(int)) <= 1)
    assert close >= 0.99, f"{what}: only {close:.2%} of pixels within 1/255"


@pytest.fixture(scope="module")
def taesd_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("taesd") / "taesd.safetensors"
    taesd_weights.convert_taesd(make.DIFFUSERS_DIR, out, dtype="fp32", log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def riff(taesd_file):
    return Riffusion.load(base.WEIGHTS, quiet=True, taesd=taesd_file)  # decoder/encoder default: full


@pytest.fixture(scope="module")
def riff_taesd(taesd_file):
    return Riffusion.load(base.WEIGHTS, quiet=True, taesd=taesd_file, decoder="taesd", encoder="taesd")


def seed_image(width=64):
    y, x = np.mgrid[0:512, 0:width]
    g = (160 + 60 * np.sin(x / 3.0) * np.cos(y / 29.0)).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


@pytest.mark.parametrize("name", sorted(make.PIPELINE_CASES))
def test_matches_committed_diffusers_pipeline(riff_taesd, name):
    want = np.load(make.EXPECTED)[f"pipeline_{name}"]
    assert want.std() > 20 and np.mean((want == 0) | (want == 255)) < 0.1  # a picture, mostly unsaturated
    assert_close_images(base.run_minriff(riff_taesd, make.PIPELINE_CASES[name]), want, name)


def test_per_call_choice_equals_the_construction_default(riff, riff_taesd):
    taesd = riff.generate_spectrogram("jazz", decoder="taesd", **KW)
    assert np.array_equal(taesd, riff_taesd.generate_spectrogram("jazz", **KW))
    full = riff.generate_spectrogram("jazz", **KW)
    assert np.array_equal(full, riff_taesd.generate_spectrogram("jazz", decoder="full", **KW))
    assert np.mean(np.abs(full.astype(int) - taesd) > 8) > 0.5  # two different decoders


def test_default_is_the_full_vae_even_with_taesd_loaded(riff):
    case = base.CASES["txt2img_dpmpp2m"]
    assert_close_images(base.run_minriff(riff, case), np.load(base.EXPECTED)["txt2img_dpmpp2m"], "full VAE")


def test_taesd_encoding_draws_nothing_from_the_generator(riff):
    rgb = seed_image()
    gen = Generator(11)
    z = riff.encode_image(rgb, gen, encoder="taesd")
    np.testing.assert_array_equal(gen.randn((3,)), Generator(11).randn((3,)))  # state untouched
    np.testing.assert_array_equal(z, riff.taesd.encode(image_to_model(rgb)))  # scaling_factor 1.0
    gen = Generator(11)
    riff.encode_image(rgb, gen)  # the full VAE samples its posterior with the generator
    assert not np.array_equal(gen.randn((3,)), Generator(11).randn((3,)))


def test_decode_preview_in_a_callback(riff):
    previews = []
    final = riff.generate_spectrogram("jazz", callback=lambda i, n, t, lat: previews.append(riff.decode_preview(lat)),
                                      decoder="taesd", **KW)
    assert len(previews) == KW["steps"] and all(p.shape == (512, 64, 3) and p.dtype == np.uint8 for p in previews)
    assert np.array_equal(previews[-1], final)  # the last step's latents are the ones decoded
    assert not np.array_equal(previews[0], previews[1])


def test_riffuse_and_interpolate_take_decoder_and_encoder(riff, riff_taesd):
    img = seed_image()
    fast = riff.riffuse(A, B, 0.25, img, steps=2, decoder="taesd", encoder="taesd")
    assert np.array_equal(fast, riff_taesd.riffuse(A, B, 0.25, img, steps=2))
    assert np.array_equal(fast, riff.interpolate_styles("rock guitar", "calm violin", 0.25, seed_a=5, seed_b=9,
                                                        steps=2, seed_image=img, decoder="taesd", encoder="taesd"))
    mixed = riff.riffuse(A, B, 0.25, img, steps=2, encoder="taesd")  # TAESD in, full VAE out
    assert not np.array_equal(mixed, fast) and not np.array_equal(mixed, riff.riffuse(A, B, 0.25, img, steps=2))
    plain = riff.interpolate_styles("rock guitar", "calm violin", 0.5, steps=2, duration_s=0.64, decoder="taesd")
    assert np.array_equal(plain, riff_taesd.interpolate_styles("rock guitar", "calm violin", 0.5, steps=2,
                                                               duration_s=0.64))


def test_unknown_choice_is_an_input_error(riff):
    with pytest.raises(InputError, match="decoder must be one of full, taesd"):
        riff.generate_spectrogram("jazz", decoder="tiny", **KW)
    with pytest.raises(InputError, match="encoder must be one of"):
        Riffusion.load(base.WEIGHTS, quiet=True, encoder="vae")
    with pytest.raises(InputError, match="encoder must be one of"):  # refused even where nothing is encoded
        riff.generate_spectrogram("jazz", encoder="VAE", **KW)
    with pytest.raises(InputError, match="encoder must be one of"):
        riff.interpolate_styles("a", "b", 0.5, encoder="VAE", steps=1, duration_s=0.64)


def test_missing_taesd_is_reported_before_denoising(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(taesd_weights.ENV, raising=False)
    riff = Riffusion.load(base.WEIGHTS, quiet=True)  # the fixture folder holds no TAESD file
    steps = []
    with pytest.raises(WeightsError, match="minriff download --taesd"):
        riff.generate_spectrogram("jazz", decoder="taesd", callback=lambda *a: steps.append(a), **KW)
    assert steps == []
    assert riff.generate_spectrogram("jazz", **KW).shape == (512, 64, 3)  # the full VAE still works


def test_taesd_found_in_weights_folder(tmp_path, monkeypatch, taesd_file):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(taesd_weights.ENV, raising=False)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "taesd.safetensors").write_bytes(Path(taesd_file).read_bytes())
    riff = Riffusion.load(base.WEIGHTS, quiet=True)
    assert riff.taesd.config.encoder_block_out_channels == (8, 8, 8, 8)


def test_incompatible_taesd_is_refused():
    wide = random_taesd(TAESDConfig(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                                    latent_channels=16))
    with pytest.raises(WeightsError, match="16-channel latents"):
        Riffusion.load(base.WEIGHTS, quiet=True, taesd=wide)


def test_a_model_given_at_construction_and_clone(riff):
    model = random_taesd("tiny", seed=3)
    r = Riffusion.load(base.WEIGHTS, quiet=True, taesd=model)
    assert r.taesd is model
    twin = r.clone()
    assert twin.taesd is not model
    assert np.array_equal(twin.generate_spectrogram("jazz", decoder="taesd", **KW),
                          r.generate_spectrogram("jazz", decoder="taesd", **KW))


# ---- live -------------------------------------------------------------------------------------------

@pytest.mark.oracle
def test_matches_diffusers_live(tmp_path):
    oracle("torch")
    oracle("diffusers")
    oracle("transformers")
    comps = base.build_components(tmp_path)
    base.write_minriff_weights(comps, tmp_path / "tiny.safetensors")
    model = make.build_taesd()
    model.save_pretrained(str(tmp_path / "taesd-diffusers"), safe_serialization=True)
    taesd_weights.convert_taesd(tmp_path / "taesd-diffusers", tmp_path / "taesd.safetensors", dtype="fp32",
                                log=lambda m: None)
    riff = Riffusion.load(tmp_path / "tiny.safetensors", quiet=True, taesd=tmp_path / "taesd.safetensors",
                          decoder="taesd", encoder="taesd")
    for name, case in make.PIPELINE_CASES.items():
        assert_close_images(base.run_minriff(riff, case), make.run_pipeline(comps, model, case), name)
