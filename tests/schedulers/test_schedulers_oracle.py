"""minriff.schedulers against diffusers, live (pytest -m oracle): same model outputs in, same
timesteps and samples out at every step (1e-6 relative); ancestral noise from the same seed."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from minriff import schedulers
from minriff.errors import InputError
from support import fixture_script, oracle

pytestmark = pytest.mark.oracle


MAKE = fixture_script("make_schedulers")
STEPS = [1, 2, 5, 20, 50]
CONFIG_NAMES = ["riffusion", "linear", "riffusion_karras", "riffusion_leading", "riffusion_trailing",
                "riffusion_sigma_min"]


def _cases():
    for name in schedulers.NAMES:
        for cfg in CONFIG_NAMES:
            for eta in {"ddim": [0.0, 0.7], "tcd": [0.0, 0.3, 1.0]}.get(name, [0.0]):
                yield name, cfg, eta


def _rel(a, b) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.fixture(autouse=True)
def _quiet():
    oracle("torch")
    diffusers = oracle("diffusers")
    diffusers.utils.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("name, cfg, eta", list(_cases()))
def test_every_step_matches_diffusers(name, cfg, eta, steps):
    config = MAKE.CONFIGS[cfg]
    ts_d, xs_d, sigma_d = MAKE.run_diffusers(name, config, steps, seed=11, eta=eta)
    ts_m, xs_m, sigma_m = MAKE.run_minriff(name, config, steps, seed=11, eta=eta)
    assert np.array_equal(ts_m, ts_d)
    assert sigma_m == pytest.approx(sigma_d, rel=1e-7)
    assert len(xs_m) == len(xs_d)
    for k, (got, want) in enumerate(zip(xs_m, xs_d)):
        assert _rel(got, want) <= 1e-6, (k, _rel(got, want))


@pytest.mark.parametrize("strength", [0.1, 0.3, 0.5, 0.75, 0.99, 1.0])
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("name", schedulers.NAMES)
def test_img2img_start_matches_diffusers(name, steps, strength):
    config = MAKE.CONFIGS["riffusion"]
    try:
        ts_d, x_d = MAKE.add_noise_diffusers(name, config, steps, strength)
    except IndexError:
        ts_d = []
    if len(ts_d) == 0:  # diffusers' slice is empty (its pipeline then refuses): nothing to denoise
        with pytest.raises(InputError, match="no denoising step"):
            MAKE.add_noise_minriff(name, config, steps, strength)
        return
    ts_m, x_m = MAKE.add_noise_minriff(name, config, steps, strength)
    assert np.array_equal(ts_m, ts_d)
    assert _rel(x_m, x_d) <= 1e-6


@pytest.mark.parametrize("name", schedulers.NAMES)
def test_add_noise_matches_diffusers_at_every_timestep(name):
    torch = oracle("torch")
    diffusers = oracle("diffusers")
    config = MAKE.CONFIGS["riffusion"]
    ours = schedulers.make(name, config)
    ours.set_timesteps(20)
    x0 = MAKE.start_sample()
    noise = MAKE.model_outputs(1)[0]
    for t in ours.timesteps:
        theirs = getattr(diffusers, MAKE.DIFFUSERS_CLASS[name]).from_config(config)
        theirs.set_timesteps(20)
        want = theirs.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.tensor([t])).numpy()
        assert _rel(np.asarray(ours.add_noise(x0, noise, t)), want) <= 1e-6, t


def test_pndm_img2img_loop_matches_diffusers_pipeline_order():
    """The Riffusion loop at strength 0.75 (741, 721, ... 1) through diffusers' PNDM: the PLMS counter
    quirk lives in the scheduler, so both must agree step by step."""
    torch = oracle("torch")
    diffusers = oracle("diffusers")
    config = MAKE.CONFIGS["riffusion"]
    ours = schedulers.make("pndm", config)
    ours.set_timesteps(50)
    t0, loop = schedulers.riffusion_img2img_schedule(ours, 50, 0.75)
    theirs = diffusers.PNDMScheduler.from_config(config)
    theirs.set_timesteps(50)
    x_m = ours.add_noise(MAKE.start_sample(), MAKE.model_outputs(1)[0], t0)
    x_d = theirs.add_noise(torch.from_numpy(MAKE.start_sample()), torch.from_numpy(MAKE.model_outputs(1)[0]),
                           torch.tensor([int(t0)]))
    outs = MAKE.model_outputs(len(loop))
    for k, t in enumerate(loop):
        x_m = ours.step(outs[k], t, x_m)
        x_d = theirs.step(torch.from_numpy(outs[k]), torch.tensor(int(t)), x_d).prev_sample
        assert _rel(x_m, x_d.numpy()) <= 1e-6, k
