"""minriff.schedulers without torch: committed diffusers runs, properties, the Riffusion schedule."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minriff import schedulers
from minriff.errors import ConfigError, InputError
from minriff.rng import Generator
from support import FIXTURES, fixture_script, rel_err

MAKE = fixture_script("make_schedulers")
CASES = np.load(FIXTURES / "schedulers" / "cases.npz")
META = json.loads(CASES["meta"].tobytes())
RIFF = MAKE.RIFFUSION


# ---- committed diffusers runs ------------------------------------------------------------------

@pytest.mark.parametrize("i", range(len(META["runs"])), ids=[f"{n}-{c}-{s}-eta{e}" for n, c, s, e in META["runs"]])
def test_matches_committed_diffusers_run(i):
    name, cfg, steps, eta = META["runs"][i]
    timesteps, samples, sigma0 = MAKE.run_minriff(name, META["configs"][cfg], steps, seed=META["seed"],
                                                  eta=eta, shape=tuple(META["shape"]))
    assert np.array_equal(timesteps, CASES[f"run{i}_timesteps"])
    assert sigma0 == pytest.approx(float(CASES[f"run{i}_init_noise_sigma"]), rel=1e-7)
    expected = CASES[f"run{i}_samples"]
    assert len(samples) == len(expected)
    for k, (got, want) in enumerate(zip(samples, expected)):
        assert got.dtype == np.float32
        assert rel_err(got, want) <= 1e-6, (k, rel_err(got, want))


@pytest.mark.parametrize("i", range(len(META["img2img"])), ids=[f"{n}-{s}-{x}" for n, _, s, x in META["img2img"]])
def test_matches_committed_img2img_start(i):
    name, cfg, steps, strength = META["img2img"][i]
    timesteps, noised = MAKE.add_noise_minriff(name, META["configs"][cfg], steps, strength, tuple(META["shape"]))
    assert np.array_equal(timesteps, CASES[f"img{i}_timesteps"])
    assert rel_err(noised, CASES[f"img{i}_noised"]) <= 1e-6


# ---- properties ------------------------------------------------------------------------------------

@given(st.integers(2, 60), st.data())
def test_ddim_perfect_noise_predictor_recovers_x0(steps, data):
    """eps = the true noise: every DDIM step stays on the x0 + noise line, and the last step (to
    alpha_bar = 1) lands on x0, from any starting timestep of the schedule."""
    cfg = dict(RIFF, set_alpha_to_one=True, clip_sample=False)
    sched = schedulers.make("ddim", cfg)
    sched.set_timesteps(steps)
    start = data.draw(st.integers(0, steps - 1))
    rs = np.random.RandomState(steps)
    x0 = rs.standard_normal((1, 4, 3, 3)).astype(np.float32)
    noise = rs.standard_normal(x0.shape).astype(np.float32)
    x = sched.add_noise(x0, noise, sched.timesteps[start])
    for t in sched.timesteps[start:]:
        x = sched.step(noise, t, x)
    np.testing.assert_allclose(x, x0, atol=2e-4)


@pytest.mark.parametrize("steps", [2, 3, 10, 50, 51, 100, 999])
def test_pndm_n_plus_one_model_calls(steps):
    sched = schedulers.make("pndm", RIFF)
    sched.set_timesteps(steps)
    assert len(sched.timesteps) == steps + 1
    x = np.zeros((1, 4, 2, 2), np.float32)
    calls = 0
    for t in sched.timesteps:
        x = sched.step(np.ones_like(x), t, x)
        calls += 1
    assert calls == steps + 1 and np.isfinite(x).all()


def test_pndm_riffusion_timesteps_50():
    """reference/riffusion.md §2.6: [981, 961, 961, 941, 921, ..., 41, 21, 1]."""
    sched = schedulers.make("pndm", RIFF)
    sched.set_timesteps(50)
    expected = [981, 961] + list(range(961, 0, -20))
    assert sched.timesteps.tolist() == expected
    sched.set_timesteps(1)
    assert sched.timesteps.tolist() == [1]  # one step: no PLMS redo, a single call


@pytest.mark.parametrize("name", schedulers.NAMES)
@pytest.mark.parametrize("cfg", ["riffusion", "linear", "riffusion_karras", "riffusion_leading",
                                 "riffusion_trailing"])
@pytest.mark.parametrize("steps", [1, 2, 5, 20, 50])
def test_timesteps_strictly_decrease(name, cfg, steps):
    sched = schedulers.make(name, MAKE.CONFIGS[cfg])
    sched.set_timesteps(steps)
    ts = np.asarray(sched.timesteps, np.float64)
    diffs = np.diff(ts)
    if name == "pndm" and steps >= 2:
        # the one documented duplicate: the first PLMS interval is evaluated twice
        assert diffs[1] == 0 and ts[1] == ts[2]
        diffs = np.delete(diffs, 1)
    if name == "dpmpp2m" and cfg == "riffusion_karras":
        # documented: Karras sigmas rounded to integer timesteps can repeat a small t (as diffusers);
        # the sigmas the solver steps through still strictly decrease
        assert (diffs <= 0).all() and (np.diff(sched.sigmas) < 0).all(), ts
        return
    assert (diffs < 0).all(), ts
    assert ts.min() >= 0 and ts.max() <= 999


@pytest.mark.parametrize("name", schedulers.NAMES)
@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "10"])
def test_bad_step_counts(name, bad):
    sched = schedulers.make(name, RIFF)
    with pytest.raises(InputError, match="inference steps"):
        sched.set_timesteps(bad)


@pytest.mark.parametrize("name", schedulers.NAMES)
def test_step_before_set_timesteps(name):
    sched = schedulers.make(name, RIFF)
    x = np.zeros((1, 4, 2, 2), np.float32)
    with pytest.raises(InputError, match="set_timesteps"):
        sched.step(x, 981, x, generator=Generator(0))


def test_unknown_scheduler_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown scheduler 'heun'.*pndm, ddim, dpmpp2m, euler, euler_a, lms"):
        schedulers.make("heun", RIFF)


@pytest.mark.parametrize("change, what", [({"prediction_type": "v_prediction"}, "prediction_type"),
                                          ({"beta_schedule": "squaredcos_cap_v2"}, "beta_schedule"),
                                          ({"timestep_spacing": "even"}, "timestep_spacing"),
                                          ({"num_train_timesteps": 0}, "num_train_timesteps")])
def test_bad_configs(change, what):
    with pytest.raises(ConfigError, match=what):
        schedulers.make("ddim", dict(RIFF, **change))
    with pytest.raises(ConfigError, match="dict"):
        schedulers.make("ddim", None)


def test_pndm_without_skip_prk_is_refused():
    with pytest.raises(ConfigError, match="skip_prk_steps"):
        schedulers.make("pndm", dict(RIFF, skip_prk_steps=False))


@pytest.mark.parametrize("name", ["euler_a", "ddim"])
def test_stochastic_steps_need_a_generator(name):
    sched = schedulers.make(name, RIFF)
    sched.set_timesteps(5)
    x = np.zeros((1, 4, 2, 2), np.float32)
    kwargs = {"eta": 1.0} if name == "ddim" else {}
    with pytest.raises(InputError, match="generator"):
        sched.step(x, sched.timesteps[0], x, **kwargs)


def test_ancestral_noise_comes_from_the_generator():
    runs = []
    for seed in (1, 1, 2):
        _, samples, _ = MAKE.run_minriff("euler_a", RIFF, 5, seed=seed)
        runs.append(samples[-1])
    assert np.array_equal(runs[0], runs[1]) and not np.allclose(runs[0], runs[2])


@pytest.mark.parametrize("name", schedulers.NAMES)
def test_add_noise_per_item_timesteps(name):
    """A (B,) vector of timesteps noises each batch item at its own level."""
    sched = schedulers.make(name, RIFF)
    sched.set_timesteps(10)
    rs = np.random.RandomState(0)
    x0 = rs.standard_normal((2, 4, 2, 2)).astype(np.float32)
    noise = rs.standard_normal(x0.shape).astype(np.float32)
    ts = sched.timesteps[[2, 5]]
    both = sched.add_noise(x0, noise, ts)
    for b in range(2):
        np.testing.assert_array_equal(both[b], sched.add_noise(x0[b:b + 1], noise[b:b + 1], ts[b])[0])


# ---- img2img ---------------------------------------------------------------------------------------

def test_img2img_timesteps_follow_diffusers_rule():
    sched = schedulers.make("ddim", RIFF)
    sched.set_timesteps(20)
    ts = schedulers.img2img_timesteps(sched, 20, 0.5)
    assert ts.tolist() == sched.timesteps[10:].tolist()
    with pytest.raises(InputError, match="no denoising step"):
        schedulers.img2img_timesteps(sched, 20, 0.01)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        schedulers.img2img_timesteps(sched, 20, 1.5)


# reference/riffusion.md §2.4 table: strength -> (init_timestep, t0, UNet calls, sqrt(abar), sqrt(1-abar))
RIFFUSION_TABLE = [(0.50, 26, 501, 0.524, 0.852), (0.55, 28, 541, 0.474, 0.881), (0.75, 38, 741, 0.246, 0.969),
                   (0.80, 41, 801, 0.191, 0.982), (0.85, 43, 841, 0.159, 0.987), (0.95, 48, 941, 0.096, 0.995),
                   (1.00, 50, 961, 0.085, 0.996)]


@pytest.mark.parametrize("strength, calls, t0, sqrt_a, sqrt_1ma", RIFFUSION_TABLE)
def test_riffusion_schedule_matches_reference_table(strength, calls, t0, sqrt_a, sqrt_1ma):
    sched = schedulers.make("pndm", RIFF)
    sched.set_timesteps(50)
    got_t0, loop = schedulers.riffusion_img2img_schedule(sched, 50, strength)
    assert int(got_t0) == t0 and len(loop) == calls
    assert loop[-1] == 1 and (strength == 1.0 or loop[0] == t0)
    a = float(sched.alphas_cumprod[t0])
    assert np.sqrt(a) == pytest.approx(sqrt_a, abs=6e-4) and np.sqrt(1 - a) == pytest.approx(sqrt_1ma, abs=6e-4)


def test_riffusion_default_loop_and_plms_quirk():
    """0.75: 741, 721, 701 ... 1 (no duplicate). Call #2 re-does 741->721 from the stored sample;
    from call #3 the step formula uses t (701) while the sample sits at 721. Checked against a
    float64 transcription of reference/riffusion.md §2.6."""
    sched = schedulers.make("pndm", RIFF)
    sched.set_timesteps(50)
    t0, loop = schedulers.riffusion_img2img_schedule(sched, 50, 0.75)
    assert loop.tolist() == list(range(741, 0, -20))
    abar = sched.alphas_cumprod.astype(np.float64)

    def prev_sample(x, t, prev_t, e):
        a_t, a_p = abar[t], abar[prev_t] if prev_t >= 0 else abar[0]
        denom = a_t * np.sqrt(1 - a_p) + np.sqrt(a_t * (1 - a_t) * a_p)
        return np.sqrt(a_p / a_t) * x - (a_p - a_t) * e / denom

    rs = np.random.RandomState(5)
    x = rs.standard_normal((1, 4, 2, 2)).astype(np.float32)
    eps = [rs.standard_normal(x.shape).astype(np.float32) for _ in loop]
    ref = x.astype(np.float64)
    e = [v.astype(np.float64) for v in eps]
    x = sched.step(eps[0], loop[0], x)
    stored, ref = ref, prev_sample(ref, 741, 721, e[0])
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-6)
    x = sched.step(eps[1], loop[1], x)
    ref = prev_sample(stored, 741, 721, (e[0] + e[1]) / 2)
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-6)
    x = sched.step(eps[2], loop[2], x)
    ref = prev_sample(ref, 701, 681, (3 * e[2] - e[0]) / 2)  # ets = [e0, e2]: e1 was the redo's
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-6)


def test_riffusion_schedule_with_current_diffusers_rule_except_at_full_strength():
    """For PNDM the two rules agree unless int(steps * strength) == steps (the original caps there)."""
    for strength in np.linspace(0.05, 0.98, 25):
        a = schedulers.make("pndm", RIFF)
        a.set_timesteps(50)
        t0, loop = schedulers.riffusion_img2img_schedule(a, 50, strength)
        ts = schedulers.img2img_timesteps(a, 50, strength)
        assert t0 == ts[0] and np.array_equal(loop, ts)


# ---- device arrays -----------------------------------------------------------------------------------

class DeviceArray(np.lib.mixins.NDArrayOperatorsMixin):
    """A stand-in for a CuPy array: arithmetic and ufuncs work, implicit conversion to NumPy raises
    (as CuPy's does), so a scheduler that pulls samples to the host fails here."""

    def __init__(self, data):
        self.data = np.asarray(data)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raw = [x.data if isinstance(x, DeviceArray) else x for x in inputs]
        return DeviceArray(getattr(ufunc, method)(*raw, **kwargs))

    def __array_namespace__(self, api_version=None):
        return DeviceNamespace

    def __array__(self, *args, **kwargs):
        raise TypeError("implicit device -> host conversion")

    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)

    def clip(self, lo, hi):
        return DeviceArray(self.data.clip(lo, hi))

    def get(self):
        return self.data


class DeviceNamespace:
    asarray = DeviceArray


@pytest.mark.parametrize("name", schedulers.NAMES)
def test_steps_stay_on_the_array_module_of_the_sample(name):
    sched_np, sched_dev = schedulers.make(name, RIFF), schedulers.make(name, RIFF)
    sched_np.set_timesteps(6)
    sched_dev.set_timesteps(6)
    rs = np.random.RandomState(0)
    x = rs.standard_normal((1, 4, 2, 3)).astype(np.float32)
    x_np, x_dev = x, DeviceArray(x)
    gen_np, gen_dev = Generator(4), Generator(4)
    for t in sched_np.timesteps:
        eps = rs.standard_normal(x.shape).astype(np.float32)
        kwargs = {"eta": 0.3} if name == "ddim" else {}
        x_np = sched_np.step(eps, t, sched_np.scale_model_input(x_np, t) * 0 + x_np, generator=gen_np, **kwargs)
        x_dev = sched_dev.step(DeviceArray(eps), t, sched_dev.scale_model_input(x_dev, t) * 0 + x_dev,
                               generator=gen_dev, **kwargs)
        assert isinstance(x_dev, DeviceArray)
        np.testing.assert_array_equal(x_dev.data, x_np)
    noised = sched_dev.add_noise(DeviceArray(x), DeviceArray(x), sched_dev.timesteps[1])
    assert isinstance(noised, DeviceArray)
