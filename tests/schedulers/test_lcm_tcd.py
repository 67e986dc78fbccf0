"""LCM and TCD without torch: committed diffusers runs (bit for bit), the reference's timestep lists,
c_skip/c_out, TCD's float32 floor, which steps draw noise, and the add_noise / x0 identities."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minriff import schedulers
from minriff.errors import ConfigError, InputError
from minriff.rng import Generator
from minriff.schedulers import LCMScheduler, TCDScheduler
from minriff.schedulers.lcm import boundary_scalings
from minriff.schedulers.tcd import intermediate_timestep
from support import FIXTURES, fixture_script

MAKE = fixture_script("make_schedulers")
DATA = np.load(FIXTURES / "schedulers" / "lcm_tcd.npz")
META = json.loads(DATA["meta"].tobytes())
RIFF = MAKE.RIFFUSION
QUIRK = [i for i, (_, _, spec) in enumerate(META["runs"]) if "timesteps" in spec and spec.get("strength", 1) < 1]


class CountingGenerator(Generator):
    """A Generator that records the shape of every randn draw."""

    def __init__(self, seed=0):
        super().__init__(seed)
        self.draws = []

    def randn(self, shape, dtype=np.float32):
        self.draws.append(tuple(shape))
        return super().randn(shape, dtype)


def _ids(runs):
    return [f"{n}-{c}-" + ",".join(f"{k}={v}" for k, v in s.items()) for n, c, s in runs]


# ---- committed diffusers runs --------------------------------------------------------------------

@pytest.mark.parametrize("i", range(len(META["runs"])), ids=_ids(META["runs"]))
def test_matches_committed_diffusers_run_bit_for_bit(i):
    name, cfg, spec = META["runs"][i]
    ts, samples, aux = MAKE.run_consistency_minriff(name, META["configs"][cfg], spec, seed=META["seed"],
                                                    shape=tuple(META["shape"]))
    assert np.array_equal(ts, DATA[f"run{i}_timesteps"])
    want, want_aux = DATA[f"run{i}_samples"], DATA[f"run{i}_aux"]
    assert len(samples) == len(want)
    for k in range(len(samples)):
        assert samples[k].dtype == np.float32
        assert np.array_equal(aux[k], want_aux[k]), k
        if i in QUIRK and k == len(samples) - 1:
            continue
        assert np.array_equal(samples[k], want[k]), (k, float(np.max(np.abs(samples[k] - want[k]))))


@pytest.mark.parametrize("i", QUIRK)
def test_custom_timesteps_with_strength_end_on_denoised(i):
    """Documented difference: diffusers re-noises the last step of a trimmed custom schedule (it counts
    steps against the untrimmed list); minriff's last step returns diffusers' own `denoised`."""
    name, cfg, spec = META["runs"][i]
    _, samples, _ = MAKE.run_consistency_minriff(name, META["configs"][cfg], spec, seed=META["seed"],
                                                 shape=tuple(META["shape"]))
    assert np.array_equal(samples[-1], DATA[f"run{i}_aux"][-1])
    assert not np.allclose(DATA[f"run{i}_samples"][-1], DATA[f"run{i}_aux"][-1], atol=1e-3)


# ---- timesteps -------------------------------------------------------------------------------------

# reference/fast_sampling_lora_controlnet.md §1.2 and §2 (verified there against diffusers 0.42.1)
REFERENCE_LISTS = [
    ("lcm", 1, {}, [999]), ("lcm", 2, {}, [999, 499]), ("lcm", 4, {}, [999, 759, 499, 259]),
    ("lcm", 8, {}, [999, 879, 759, 639, 499, 379, 259, 139]), ("lcm", 4, {"strength": 0.5}, [499, 379, 259, 139]),
    ("tcd", 4, {}, [999, 759, 499, 259]), ("tcd", 4, {"original_inference_steps": 50}, [999, 749, 499, 249]),
]


@pytest.mark.parametrize("name, n, kwargs, expected", REFERENCE_LISTS)
def test_timesteps_match_the_reference_lists(name, n, kwargs, expected):
    sched = schedulers.make(name, RIFF)
    sched.set_timesteps(n, **kwargs)
    assert sched.timesteps.tolist() == expected and sched.timesteps.dtype == np.int64


def test_sd_img2img_trim_runs_fewer_steps():
    """StableDiffusionImg2ImgPipeline's convention (reference §1.2): n=4 at 0.5 runs [499, 259]."""
    sched = schedulers.make("lcm", RIFF)
    sched.set_timesteps(4)
    assert schedulers.img2img_timesteps(sched, 4, 0.5).tolist() == [499, 259]
    assert sched.begin_index == 2


@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("strength", MAKE.TABLE_STRENGTHS)
@pytest.mark.parametrize("variant", ["lcm", "tcd", "tcd_orig50"])
def test_timesteps_match_committed_diffusers_table(variant, n, strength):
    want = META["timestep_table"][f"{variant} n={n} strength={strength}"]
    sched = schedulers.make(variant[:3], RIFF)
    extra = {"original_inference_steps": 50} if variant == "tcd_orig50" else {}
    if want is None:
        with pytest.raises(InputError, match="candidate timesteps"):
            sched.set_timesteps(n, strength=strength, **extra)
    else:
        sched.set_timesteps(n, strength=strength, **extra)
        assert sched.timesteps.tolist() == want


def test_config_keys_that_do_not_matter():
    """set_alpha_to_one, steps_offset and timestep_spacing (from an SD/Riffusion PNDM config) change
    nothing; original_inference_steps and timestep_scaling do."""
    base = MAKE.run_consistency_minriff("lcm", RIFF, dict(steps=4))
    other = dict(RIFF, set_alpha_to_one=True, steps_offset=0, timestep_spacing="trailing")
    same = MAKE.run_consistency_minriff("lcm", other, dict(steps=4))
    assert all(np.array_equal(a, b) for a, b in zip(base[1], same[1]))
    for change in ({"original_inference_steps": 25}, {"timestep_scaling": 1.0}):
        moved = MAKE.run_consistency_minriff("lcm", dict(RIFF, **change), dict(steps=4))
        assert not np.array_equal(base[1][-1], moved[1][-1]), change


# ---- c_skip, c_out -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", ["riffusion", "lcm_scaled_25"])
def test_boundary_scalings_match_diffusers_at_every_timestep(cfg):
    scaling = META["configs"][cfg].get("timestep_scaling", 10.0)
    got = np.array([boundary_scalings(t, scaling) for t in range(1000)], np.float32).T
    want = DATA[f"scalings_{cfg}"]
    assert np.array_equal(got[0], want[0])
    # c_out takes a sqrt: torch's float32 sqrt is not always correctly rounded (numpy's is), so a
    # last-bit difference is possible; at Riffusion's scaling of 10 there is none.
    off = got[1] != want[1]
    assert (not off.any()) if cfg == "riffusion" else np.mean(off) < 0.01
    assert np.max(np.abs(got[1] - want[1])) <= 2.5e-7
    big_t = np.arange(1000) * scaling
    np.testing.assert_allclose(got[0], 0.25 / (big_t ** 2 + 0.25), rtol=1e-6)
    np.testing.assert_allclose(got[1], big_t / np.sqrt(big_t ** 2 + 0.25), rtol=1e-6)


def test_boundary_scalings_reference_values():
    """reference §1.3: c_skip ~ 2.5e-9 at t=999 and 6.9e-6 at t=19; c_out ~ 1; at t=0 the identity."""
    assert boundary_scalings(999, 10.0)[0] == pytest.approx(2.505e-9, rel=1e-3)
    assert boundary_scalings(19, 10.0)[0] == pytest.approx(6.925e-6, rel=1e-3)
    assert all(abs(boundary_scalings(t, 10.0)[1] - 1) < 4e-6 for t in range(19, 1000))
    assert boundary_scalings(0, 10.0) == (1.0, 0.0)


# ---- TCD's intermediate timestep -------------------------------------------------------------------

def _floor_f32_exact(gamma: float, prev_t: np.ndarray) -> np.ndarray:
    """float32(1 - gamma) * prev_t done exactly (a 24-bit by 10-bit product fits float64), rounded once
    to float32, floored: torch's float32 product of the int64 tensor and the Python float."""
    exact = np.float64(np.float32(1.0 - gamma)) * prev_t.astype(np.float64)
    return np.floor(exact.astype(np.float32)).astype(np.int64)


def test_tcd_floor_is_float32_over_all_pairs():
    prev = np.arange(1000)
    f64_differs = 0
    for row, gamma in enumerate(META["gammas"]):
        got = intermediate_timestep(gamma, prev)
        assert np.array_equal(got, _floor_f32_exact(gamma, prev)), gamma
        assert np.array_equal(got, DATA["tcd_s"][row]), gamma  # torch's, committed
        assert all(int(intermediate_timestep(gamma, p)) == got[p] for p in (0, 90, 999))  # scalar path
        f64_differs += int(np.sum(np.floor((1.0 - gamma) * prev) != got))
    assert f64_differs > 0  # the test tells float32 from float64
    assert int(intermediate_timestep(0.3, 90)) == 63 and int(np.floor((1 - 0.3) * 90)) == 62  # reference §2


def test_tcd_step_lands_on_the_float32_intermediate_timestep():
    """gamma 0.3 and prev_t 90: x_s is at s = 63 (float32), not 62: an eps-only sample goes to
    sqrt(1 - abar_63) eps exactly as add_noise(0, eps, 63)."""
    sched = TCDScheduler(RIFF, gamma=0.3)
    sched.set_timesteps(timesteps=[500, 90])
    eps = np.random.RandomState(0).standard_normal((1, 4, 2, 2)).astype(np.float32)
    x = sched.add_noise(np.zeros_like(eps), eps, 500)
    sched.step(eps, 500, x, generator=Generator(0))
    np.testing.assert_allclose(sched.pred_noised_sample, sched.add_noise(np.zeros_like(eps), eps, 63), rtol=1e-6)


# ---- which steps draw noise ------------------------------------------------------------------------

def _run(sched, n_or_ts, gen, shape=(1, 4, 3, 5), trim=None):
    if isinstance(n_or_ts, int):
        sched.set_timesteps(n_or_ts)
    else:
        sched.set_timesteps(timesteps=n_or_ts)
    ts = sched.timesteps if trim is None else schedulers.img2img_timesteps(sched, len(sched.timesteps), trim)
    rs = np.random.RandomState(1)
    x = rs.standard_normal(shape).astype(np.float32)
    for t in ts:
        x = sched.step(rs.standard_normal(shape).astype(np.float32), t, x, generator=gen)
    return x, len(ts)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
@pytest.mark.parametrize("make", [lambda: LCMScheduler(RIFF), lambda: TCDScheduler(RIFF, gamma=0.3),
                                  lambda: TCDScheduler(RIFF, gamma=1.0)], ids=["lcm", "tcd0.3", "tcd1"])
def test_every_step_but_the_last_draws_once_in_the_model_output_shape(make, n):
    gen = CountingGenerator()
    _, steps = _run(make(), n, gen)
    assert gen.draws == [(1, 4, 3, 5)] * (steps - 1)


@pytest.mark.parametrize("trim", [0.5, 0.75])
def test_img2img_last_step_draws_nothing(trim):
    gen = CountingGenerator()
    _, steps = _run(LCMScheduler(RIFF), 6, gen, trim=trim)
    assert steps < 6 and len(gen.draws) == steps - 1


def test_one_step_and_gamma_zero_need_no_generator():
    x1, _ = _run(LCMScheduler(RIFF), 1, None)
    gen = CountingGenerator()
    x0, _ = _run(TCDScheduler(RIFF, gamma=0.0), 4, gen)
    assert gen.draws == [] and np.isfinite(x1).all()
    assert np.array_equal(x0, _run(TCDScheduler(RIFF, gamma=0.0), 4, None)[0])
    with pytest.raises(InputError, match="generator"):
        _run(LCMScheduler(RIFF), 2, None)


def test_step_eta_overrides_gamma_for_that_step():
    a, b = TCDScheduler(RIFF, gamma=0.7), TCDScheduler(RIFF, gamma=0.0)
    for s in (a, b):
        s.set_timesteps(2)
    x = np.ones((1, 4, 2, 2), np.float32)
    gen = CountingGenerator()
    ya = a.step(x * 0.5, a.timesteps[0], x, generator=gen, eta=0.0)
    assert gen.draws == [] and np.array_equal(ya, b.step(x * 0.5, b.timesteps[0], x))


def test_noise_comes_from_the_generator():
    runs = [_run(LCMScheduler(RIFF), 4, Generator(seed))[0] for seed in (3, 3, 4)]
    assert np.array_equal(runs[0], runs[1]) and not np.allclose(runs[0], runs[2])


# ---- identities ------------------------------------------------------------------------------------

@given(st.sampled_from(["lcm", "tcd"]), st.integers(0, 999), st.sampled_from(["epsilon", "v_prediction"]))
def test_perfect_prediction_last_step_recovers_x0(name, t, kind):
    """x_t = add_noise(x0, noise, t) and the model's exact eps (or v): LCM's denoised is c_out x0 +
    c_skip x_t; TCD at gamma 0 lands on add_noise(x0, noise, 0) (s = 0 on the last step)."""
    sched = schedulers.make(name, dict(RIFF, prediction_type=kind))
    sched.set_timesteps(timesteps=[t])
    rs = np.random.RandomState(t)
    x0 = rs.standard_normal((1, 4, 3, 3)).astype(np.float32)
    noise = rs.standard_normal(x0.shape).astype(np.float32)
    x = sched.add_noise(x0, noise, t)
    a = np.float64(sched.alphas_cumprod[t])
    out = noise if kind == "epsilon" else np.sqrt(a) * noise - np.sqrt(1 - a) * x0
    got = sched.step(out.astype(np.float32), t, x, **({"eta": 0.0} if name == "tcd" else {}))
    if name == "lcm":
        c_skip, c_out = (float(c) for c in boundary_scalings(t, 10.0))
        want = c_out * x0 + c_skip * x
    else:
        want = sched.add_noise(x0, noise, 0)
    np.testing.assert_allclose(got, want, atol=2e-5)  # worst over all t: 1.6e-6


@given(st.integers(0, 999))
def test_add_noise_identities(t):
    sched = schedulers.make("lcm", RIFF)
    rs = np.random.RandomState(t)
    x0 = rs.standard_normal((2, 4, 2, 2)).astype(np.float32)
    noise = rs.standard_normal(x0.shape).astype(np.float32)
    a = sched.alphas_cumprod[t]
    assert np.array_equal(sched.add_noise(x0, np.zeros_like(x0), t), np.sqrt(a) * x0)
    assert np.array_equal(sched.add_noise(np.zeros_like(x0), noise, t), np.sqrt(np.float32(1) - a) * noise)
    both = sched.add_noise(x0, noise, t).astype(np.float64)
    assert np.allclose(both, np.sqrt(float(a)) * x0 + np.sqrt(1 - float(a)) * noise, atol=1e-6)
    assert np.allclose(np.var(both - np.sqrt(float(a)) * x0) / np.var(noise), 1 - float(a), rtol=1e-5)


# ---- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(num_inference_steps=51), r"candidate timesteps, but original_inference_steps \(50\) x strength \(1.0\)"),
    (dict(num_inference_steps=8, strength=0.1), "candidate timesteps"),
    (dict(num_inference_steps=4, strength=1.5), r"\[0, 1\]"),
    (dict(), "exactly one"),
    (dict(num_inference_steps=4, timesteps=[999]), "exactly one"),
    (dict(timesteps=[999, 999]), "descending"),
    (dict(timesteps=[1000, 500]), r"\[0, 999\]"),
    (dict(timesteps=[500, -1]), r"\[0, 999\]"),
    (dict(timesteps=[500.5]), "integers"),
    (dict(timesteps=[999, 500], strength=0.0), "leaves none"),
    (dict(num_inference_steps=4, original_inference_steps=0), "original_inference_steps"),
])
@pytest.mark.parametrize("name", ["lcm", "tcd"])
def test_bad_set_timesteps(name, kwargs, match):
    with pytest.raises(InputError, match=match):
        schedulers.make(name, RIFF).set_timesteps(**kwargs)


def test_tcd_explicit_original_steps_still_cap_the_step_count():
    sched = TCDScheduler(RIFF)
    sched.set_timesteps(50, original_inference_steps=50)
    assert len(sched.timesteps) == 50 and sched.timesteps[1] == 979
    with pytest.raises(InputError, match="more than original_inference_steps=50"):
        sched.set_timesteps(60, original_inference_steps=50)


@pytest.mark.parametrize("change", [{"thresholding": True}, {"rescale_betas_zero_snr": True},
                                    {"prediction_type": "flow"}, {"original_inference_steps": 2000}])
def test_bad_configs(change):
    for name in ("lcm", "tcd"):
        with pytest.raises(ConfigError, match=next(iter(change))):
            schedulers.make(name, dict(RIFF, **change))


@pytest.mark.parametrize("gamma", [-0.1, 1.5, "0.3", True])
def test_bad_gamma(gamma):
    with pytest.raises(InputError, match="gamma"):
        TCDScheduler(RIFF, gamma=gamma)
    sched = TCDScheduler(RIFF)
    sched.set_timesteps(2)
    x = np.zeros((1, 4, 2, 2), np.float32)
    with pytest.raises(InputError, match="gamma"):
        sched.step(x, 999, x, generator=Generator(0), eta=gamma)


def test_make_passes_options_and_refuses_unknown_ones():
    assert schedulers.make("tcd", RIFF, gamma=0.6).gamma == 0.6
    assert schedulers.make("tcd", RIFF).gamma == 0.3
    with pytest.raises(InputError, match="takes no option gamma"):
        schedulers.make("lcm", RIFF, gamma=0.3)


def test_stepping_past_the_end():
    sched = LCMScheduler(RIFF)
    sched.set_timesteps(2)
    x = np.zeros((1, 4, 2, 2), np.float32)
    for t in sched.timesteps:
        x = sched.step(x, t, x, generator=Generator(0))
    with pytest.raises(InputError, match="past the last"):
        sched.step(x, sched.timesteps[-1], x, generator=Generator(0))
