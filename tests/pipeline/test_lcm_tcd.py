"""LCM and TCD in the pipeline: equality with diffusers' StableDiffusion(Img2Img)Pipeline + LCMScheduler /
TCDScheduler on the tiny random SD, the UNet at batch 1 without guidance in every entry point, and the
scheduler objects and options of the API.

Acceptance (issue 15): images within 1/255 on >= 99 % of pixels and final latents within 1e-4 of
diffusers. The default suite compares with tests/fixtures/pipeline/lcm_tcd.npz (made by
tests/fixtures/make_pipeline_lcm_tcd.py); `pytest -m oracle` runs diffusers live on freshly built weights.
"""
from __future__ import annotations

import numpy as np
import pytest

from minriff import Riffusion, schedulers
from minriff.errors import InputError
from minriff.schedulers import LCMScheduler, TCDScheduler
from support import fixture_script, oracle, rel_err

make = fixture_script("make_pipeline_lcm_tcd")
base = fixture_script("make_pipeline")

pytestmark = pytest.mark.usefixtures("serial_numba")
KW = dict(duration_s=0.64, steps=4)


def assert_same(ours, theirs, what: str):
    (img, lat), (img_d, lat_d) = ours, theirs
    assert lat.shape == lat_d.shape and np.max(np.abs(lat - lat_d)) <= 1e-4, (what, np.max(np.abs(lat - lat_d)))
    if img_d is not None:
        assert img.shape == img_d.shape and img.dtype == np.uint8
        close = np.mean(np.abs(img.astype(int) - img_d.astype(int)) <= 1)
        assert close >= 0.99, f"{what}: only {close:.2%} of pixels within 1/255"


@pytest.fixture(scope="module")
def riff():
    return Riffusion.load(base.WEIGHTS, quiet=True)


# ---- against diffusers ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(make.CASES))
def test_matches_committed_diffusers_run(riff, name):
    data = np.load(make.EXPECTED)
    image = data[f"{name}_image"] if name in make.IMAGE_CASES else None
    if image is not None:
        assert image.std() > 10  # an actual picture, not a saturated block
    assert_same(make.run_minriff(riff, make.CASES[name]), (image, data[f"{name}_latents"]), name)


def test_fixture_cases_differ_from_each_other():
    """Guards against a fixture where seed, scheduler, gamma or guidance have no effect."""
    data = np.load(make.EXPECTED)
    names = sorted(make.CASES)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            la, lb = data[f"{a}_latents"], data[f"{b}_latents"]
            assert la.shape != lb.shape or rel_err(la, lb) > 0.05, (a, b)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    oracle("torch")
    oracle("diffusers")
    oracle("transformers")
    return base.live_pipeline(tmp_path_factory.mktemp("tiny_sd"))


@pytest.mark.oracle
@pytest.mark.parametrize("name", sorted(make.CASES))
def test_matches_diffusers_live(live, name):
    comps, riff = live
    case = make.CASES[name]
    assert_same(make.run_minriff(riff, case), make.run_diffusers(comps, case), name)


@pytest.mark.oracle
@pytest.mark.parametrize("case", [
    dict(kind="txt2img", scheduler="lcm", prompt="organ drone", negative=None, steps=1, guidance=0.0, seed=1),
    dict(kind="txt2img", scheduler="tcd", gamma=1.0, prompt="organ drone", negative="choir", steps=3, guidance=2.0,
         seed=2),
    dict(kind="img2img", scheduler="tcd", gamma=0.0, prompt="techno", negative=None, steps=8, guidance=1.0, seed=4,
         strength=0.5),
    dict(kind="img2img", scheduler="lcm", prompt="techno", negative=None, steps=2, guidance=1.0, seed=6,
         strength=1.0),
], ids=["lcm-1step-g0", "tcd-gamma1-g2", "tcd-img2img-8-0.5-gamma0", "lcm-img2img-2-1.0"])
def test_more_cases_match_diffusers_live(live, case):
    comps, riff = live
    assert_same(make.run_minriff(riff, case), make.run_diffusers(comps, case), str(case))


# ---- batch 1 without guidance --------------------------------------------------------------------------

class Recorder:
    """Wraps a model and records the batch size of every call."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def __call__(self, x, *args, **kwargs):
        self.batches.append(int(x.shape[0]))
        return self.model(x, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


A = {"prompt": "rock guitar", "seed": 5, "negative_prompt": "drums", "denoising": 0.75}
B = {"prompt": "calm violin", "seed": 9, "negative_prompt": "noise", "denoising": 0.75}


def _entry_points(riff, guidance, scheduler):
    img = base.init_image()[:, :64]
    return {
        "txt2img": lambda: riff.generate_spectrogram("jazz", negative_prompt="drums", guidance=guidance,
                                                     scheduler=scheduler, seed=1, **KW),
        "img2img": lambda: riff.generate_spectrogram("jazz", negative_prompt="drums", guidance=guidance,
                                                     scheduler=scheduler, seed=1, init_image=img, strength=0.75,
                                                     **KW),
        "interpolate": lambda: riff.interpolate_styles("jazz", "rock", 0.5, negative_prompt="drums",
                                                       guidance=guidance, scheduler=scheduler, **KW),
        "interpolate_seed_image": lambda: riff.interpolate_styles("jazz", "rock", 0.5, negative_prompt="drums",
                                                                  guidance=guidance, scheduler=scheduler,
                                                                  seed_image=img, **KW),
        "riffuse": lambda: riff.riffuse(dict(A, guidance=guidance), dict(B, guidance=guidance), 0.5, img,
                                        steps=4, scheduler=scheduler),
    }


@pytest.mark.parametrize("guidance, batch", [(1.0, 1), (0.0, 1), (0.5, 1), (1.5, 2)])
@pytest.mark.parametrize("entry", ["txt2img", "img2img", "interpolate", "interpolate_seed_image", "riffuse"])
def test_guidance_up_to_1_runs_the_unet_at_batch_1_and_skips_the_negative_prompt(riff, monkeypatch, entry,
                                                                                 guidance, batch):
    unet = Recorder(riff.unet)
    monkeypatch.setattr(riff, "unet", unet)
    monkeypatch.setattr(riff, "_text_cache", {})
    _entry_points(riff, guidance, "lcm")[entry]()
    assert unet.batches and set(unet.batches) == {batch}, unet.batches
    encoded = set(riff._text_cache)
    negatives = {"drums", "noise", ""} & encoded
    assert bool(negatives) == (batch == 2), encoded  # the negative prompt is encoded only for guidance


# ---- the API ---------------------------------------------------------------------------------------------

def final_latents(riff, **kw):
    seen = []
    riff.generate_spectrogram("jazz piano", seed=3, callback=lambda i, n, t, x: seen.append(x.copy()),
                              **{**KW, "guidance": 1.0, **kw})
    return seen[-1]


def test_names_objects_and_make_options_agree(riff):
    by_name = final_latents(riff, scheduler="tcd")  # default gamma 0.3
    obj = TCDScheduler(riff.scheduler_config, gamma=0.3)
    assert np.array_equal(by_name, final_latents(riff, scheduler=obj))
    assert obj.timesteps is None  # each run steps a copy
    constructed = Riffusion.load(base.WEIGHTS, quiet=True, scheduler=schedulers.make("tcd", riff.scheduler_config))
    assert np.array_equal(by_name, final_latents(constructed))
    assert not np.array_equal(by_name, final_latents(riff, scheduler=TCDScheduler(riff.scheduler_config, gamma=0.0)))
    lcm = final_latents(riff, scheduler="lcm")
    assert np.array_equal(lcm, final_latents(riff, scheduler=LCMScheduler(riff.scheduler_config)))


def test_too_many_steps_for_lcm_is_an_input_error(riff):
    with pytest.raises(InputError, match="original_inference_steps"):
        riff.generate_spectrogram("jazz", scheduler="lcm", guidance=1.0, duration_s=0.64, steps=60)


def test_callback_total_counts_lcm_img2img_steps(riff):
    seen = []
    riff.generate_spectrogram("jazz", scheduler="lcm", guidance=1.0, init_image=base.init_image()[:, :64],
                              strength=0.5, callback=lambda i, n, t, x: seen.append((i, n, t)), **KW)
    assert seen == [(0, 2, 499), (1, 2, 259)]  # reference §1.2: n=4 at 0.5 runs [499, 259]
