"""LCMScheduler and TCDScheduler against diffusers, live (pytest -m oracle): step counts 1-8, both img2img
conventions, custom timesteps, gammas, prediction types; same model outputs and seed in, same timesteps
and samples out (1e-6 relative; most runs agree bit for bit)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from minriff.errors import InputError
from minriff.schedulers.lcm import boundary_scalings
from minriff.schedulers.tcd import intermediate_timestep
from support import fixture_script, oracle, rel_err

pytestmark = pytest.mark.oracle

MAKE = fixture_script("make_schedulers")
CONFIGS = ["riffusion", "linear", "riffusion_v", "riffusion_sample_clip", "lcm_scaled_25"]
MODES = [{}, {"strength": 0.5}, {"strength": 0.75}, {"trim": 0.5}, {"trim": 0.75}, {"trim": 0.3}]


@pytest.fixture(autouse=True)
def _quiet():
    oracle("torch")
    diffusers = oracle("diffusers")
    diffusers.utils.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _compare(name, cfg, spec, skip_last=False):
    config = MAKE.CONFIGS[cfg]
    if "trim" in spec and MAKE._trim_start(spec["steps"], spec["trim"]) >= spec["steps"]:
        # diffusers' slice is empty (its img2img pipeline refuses); minriff says so
        with pytest.raises(InputError, match="no denoising step"):
            MAKE.run_consistency_minriff(name, config, spec)
        return None
    ts_d, xs_d, aux_d = MAKE.run_consistency_diffusers(name, config, spec, seed=5)
    ts_m, xs_m, aux_m = MAKE.run_consistency_minriff(name, config, spec, seed=5)
    assert np.array_equal(ts_m, ts_d)
    assert len(xs_m) == len(xs_d)
    for k in range(len(xs_m)):
        assert rel_err(aux_m[k], aux_d[k]) <= 1e-6, k
        if not (skip_last and k == len(xs_m) - 1):
            assert rel_err(xs_m[k], xs_d[k]) <= 1e-6, (k, rel_err(xs_m[k], xs_d[k]))
    return xs_m, xs_d, aux_d


@pytest.mark.parametrize("mode", MODES, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()) or "full")
@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("steps", range(1, 9))
def test_lcm_matches_diffusers(steps, cfg, mode):
    spec = dict(mode, steps=steps)
    _compare("lcm", cfg, spec)


@pytest.mark.parametrize("eta", [0.0, 0.1, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("mode", MODES + [{"original_inference_steps": 50}, {"original_inference_steps": 20}],
                         ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()) or "full")
@pytest.mark.parametrize("cfg", ["riffusion", "riffusion_v", "riffusion_sample_clip"])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 6, 8])
def test_tcd_matches_diffusers(steps, cfg, mode, eta):
    spec = dict(mode, steps=steps, eta=eta)
    _compare("tcd", cfg, spec)


@pytest.mark.parametrize("name, spec", [
    ("lcm", dict(timesteps=[999, 850, 600, 301, 40])), ("tcd", dict(timesteps=[980, 500, 20], eta=0.4)),
    ("tcd", dict(timesteps=[999, 759, 499, 259], strength=0.5, eta=0.3)),
])
def test_custom_timesteps_match_diffusers(name, spec):
    _compare(name, "riffusion", spec)


def test_lcm_custom_timesteps_with_strength_differ_only_on_the_last_step():
    """diffusers' last step of a trimmed custom schedule re-noises; minriff's returns `denoised`."""
    spec = dict(timesteps=[999, 759, 499, 259, 19], strength=0.6)
    xs_m, xs_d, aux_d = _compare("lcm", "riffusion", spec, skip_last=True)
    assert np.array_equal(xs_m[-1], aux_d[-1]) and rel_err(xs_m[-1], xs_d[-1]) > 1e-2


@pytest.mark.parametrize("scaling", [10.0, 7.3, 1.0, 0.7])
def test_boundary_scalings_match_diffusers(scaling):
    torch = oracle("torch")
    diffusers = oracle("diffusers")
    sched = diffusers.LCMScheduler.from_config(dict(MAKE.RIFFUSION, timestep_scaling=scaling))
    for t in range(1000):
        c_skip, c_out = sched.get_scalings_for_boundary_condition_discrete(torch.tensor(t))
        ours = boundary_scalings(t, scaling)
        assert ours[0] == np.float32(c_skip.item()), t
        assert abs(ours[1] - np.float32(c_out.item())) <= 2.5e-7, t  # torch's sqrt: not always correctly rounded


def test_tcd_floor_matches_torch_over_all_pairs():
    want = MAKE.tcd_intermediate_torch()
    for row, gamma in enumerate(MAKE.TCD_GAMMAS):
        assert np.array_equal(intermediate_timestep(gamma, np.arange(1000)), want[row]), gamma
