"""DeepCache in the sampling loop (cache_interval / cache_branch / cache_schedule), on the tiny random SD.

- Against diffusers with DeepCache's `DeepCacheSDHelper` (uniform) and a helper subclass with the
  research pipeline's non-uniform full steps (quadratic), at several branches, PNDM (its repeated
  timestep), DPM-Solver++, LCM at batch 1, img2img and Riffusion's interpolation: images within 1/255
  on >= 99 % of pixels, final latents within 1e-4. Default suite: tests/fixtures/deepcache/pipeline.npz
  (tests/fixtures/make_deepcache.py); live under `pytest -m oracle`.
- Interval 1 is the run without DeepCache, bit for bit, in all three entry points.
- The step plan: positions from the scheduler's list, uniform and quadratic full steps.
- A cached step's noise prediction vs the full step's on the same inputs (stated bounds below).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff import Riffusion, deepcache, schedulers
from minriff.errors import InputError
from support import fixture_script, oracle

make = fixture_script("make_deepcache")
base = fixture_script("make_pipeline")

pytestmark = pytest.mark.usefixtures("serial_numba")


def assert_same(ours, theirs, what: str):
    (img, lat), (img_d, lat_d) = ours, theirs
    assert lat.shape == lat_d.shape and np.max(np.abs(lat - lat_d)) <= 1e-4, (what, np.max(np.abs(lat - lat_d)))
    if img_d is not None:
        assert img.shape == img_d.shape and img.dtype == np.uint8
        close = np.mean(np.abs(img.astype(int) - img_d.astype(int)) <= 1)
        assert close >= 0.99, f"{what}: only {close:.2%} of pixels within 1/255"


def expected(name: str):
    """(image or None, final latents) of the committed diffusers run."""
    data = np.load(make.PIPELINE_EXPECTED)
    return (data[f"{name}_image"] if name in make.IMAGE_CASES else None), data[f"{name}_latents"]


@pytest.fixture(scope="module")
def riff():
    return Riffusion.load(base.WEIGHTS, quiet=True)


# ---- against diffusers ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(make.CASES))
def test_matches_committed_diffusers_run(riff, name):
    image, latents = expected(name)
    if image is not None:
        assert image.std() > 10  # an actual picture
    assert_same(make.run_minriff(riff, make.CASES[name]), (image, latents), name)


@pytest.mark.parametrize("name", sorted(make.CASES))
def test_the_fixture_needs_the_cache(riff, name):
    """Without DeepCache (interval 1) each case's latents miss the fixture by > 100x the tolerance."""
    _, lat = make.run_minriff(riff, dict(make.CASES[name], interval=1))
    assert np.max(np.abs(lat - expected(name)[1])) > 1e-2


@pytest.mark.parametrize("name", ["pndm_uniform2_b1", "riffuse_uniform2_b2"])
def test_positions_follow_the_scheduler_list_as_the_helper_does(riff, name, monkeypatch):
    """Counting steps 0, 1, 2, ... instead (PNDM's repeated timestep counted twice, riffuse's run
    starting on it) misses these two fixtures by > 10x the tolerance."""
    monkeypatch.setattr(deepcache, "step_positions", lambda all_ts, run_ts: list(range(len(run_ts))))
    _, lat = make.run_minriff(riff, make.CASES[name])
    assert np.max(np.abs(lat - expected(name)[1])) > 1e-3


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    oracle("torch"), oracle("diffusers"), oracle("transformers"), oracle("DeepCache")
    return base.live_pipeline(tmp_path_factory.mktemp("tiny_sd"))


@pytest.mark.oracle
@pytest.mark.parametrize("name", sorted(make.CASES))
def test_matches_diffusers_live(live, name):
    comps, riff = live
    case = make.CASES[name]
    assert_same(make.run_minriff(riff, case), make.run_diffusers(comps, case), name)


@pytest.mark.oracle
def test_quadratic_schedule_is_the_research_pipelines():
    oracle("DeepCache")
    for n in range(1, 121):
        for interval in range(2, n + 1):
            assert deepcache.quadratic_full_steps(n, interval) == make.research_full_steps(n, interval), (n, interval)


# ---- interval 1 == no DeepCache, and the cache is used in every entry point ----------------------------
def _runs(riff, **cache):
    """(image, final latents) of the three entry points, with these cache options."""
    out = []
    for call in (
        lambda cb: riff.generate_spectrogram("jazz", negative_prompt="drums", duration_s=0.64, steps=6, seed=1,
                                             scheduler="pndm", callback=cb, **cache),
        lambda cb: riff.interpolate_styles("bells", "jazz", 0.3, seed_a=2, seed_b=5, duration_s=0.64, steps=5,
                                           guidance=1.0, scheduler="dpmpp2m", callback=cb, **cache),
        lambda cb: riff.riffuse({"prompt": "bells", "seed": 3}, {"prompt": "jazz", "seed": 4}, 0.5,
                                base.init_image()[:, :64], mask=base.mask_image()[:, :64], steps=8,
                                callback=cb, **cache),
    ):
        seen = {}

        def keep(i, n, t, latents, seen=seen):
            seen["latents"] = latents.copy()

        out.append((call(keep), seen["latents"]))
    return out


def test_interval_1_is_the_run_without_deepcache_bit_for_bit(riff):
    for (img, lat), (img1, lat1) in zip(_runs(riff), _runs(riff, cache_interval=1, cache_branch=2)):
        np.testing.assert_array_equal(lat1, lat)
        np.testing.assert_array_equal(img1, img)


def test_every_entry_point_uses_the_cache(riff, monkeypatch):
    counts = {"full": 0, "cached": 0, "batch": set()}
    full, step = riff.unet.deep_cache_full, riff.unet.deep_cache_step

    def spy_full(x, t, context, branch):
        counts["full"] += 1
        counts["batch"].add(x.shape[0])
        return full(x, t, context, branch)

    def spy_step(x, t, context, branch, feature):
        counts["cached"] += 1
        assert feature.shape[0] == x.shape[0]  # with guidance the cache holds the doubled batch
        return step(x, t, context, branch, feature)

    monkeypatch.setattr(riff.unet, "deep_cache_full", spy_full)
    monkeypatch.setattr(riff.unet, "deep_cache_step", spy_step)
    plain = _runs(riff)
    assert counts == {"full": 0, "cached": 0, "batch": set()}
    cached = _runs(riff, cache_interval=2)
    # generate: PNDM 6 steps = 7 calls at positions 0 1 1 3 4 5 6 -> full at 0 4 6 (3), cached 4;
    # interpolate: DPM-Solver++ 5 steps, full at 0 2 4 (3), cached 2; riffuse: PNDM, 8 steps at
    # denoising 0.75 -> 7 calls from index 2 of [t0 t1 t1 t2 ...], the repeat (positions 0 2 3 4 5 6 7):
    # 4 full, 3 cached
    assert counts == {"full": 3 + 3 + 4, "cached": 4 + 2 + 3, "batch": {1, 2}}
    for (img, lat), (img_c, lat_c) in zip(plain, cached):
        assert np.max(np.abs(lat - lat_c)) > 1e-3 and img.shape == img_c.shape


# ---- how far a cached step is from a full one ----------------------------------------------------------
def test_cached_steps_approximate_the_full_step(riff, monkeypatch):
    """PNDM 30 steps, interval 3, guidance 7, 64 px wide, on the tiny random SD. At each of the 20
    cached steps, with x the full step's eps on the same inputs and the scale max|x|, the cached eps
    is off by (measured, branches 0 / 1 / 2 / 3): at most 0.21 / 0.12 / 0.10 / 0.10 of the scale,
    on average 0.056 / 0.030 / 0.021 / 0.019, where reusing the last full step's eps whole would be
    off by 0.089 on average. Bounds: at most 0.25, on average under 3/4 of the reused eps's error at
    branch 0 and under 0.4 of it from branch 1 on. Random weights: a trained UNet changes more
    smoothly from step to step, so these describe this model, not a quality figure."""
    unet = riff.unet
    full, step = unet.deep_cache_full, unet.deep_cache_step
    last, errors = {}, []

    def spy_full(x, t, context, branch):
        eps, feature = full(x, t, context, branch)
        last["eps"] = eps
        return eps, feature

    def spy_step(x, t, context, branch, feature):
        eps = step(x, t, context, branch, feature)
        truth = unet(x, t, context)
        scale = np.abs(truth).max()
        errors.append((np.abs(eps - truth).max() / scale, np.abs(last["eps"] - truth).max() / scale))
        return eps

    monkeypatch.setattr(unet, "deep_cache_full", spy_full)
    monkeypatch.setattr(unet, "deep_cache_step", spy_step)
    means = []
    for branch in range(4):
        errors.clear()
        riff.generate_spectrogram("jazz", duration_s=0.64, steps=30, seed=3, scheduler="pndm", guidance=7.0,
                                  cache_interval=3, cache_branch=branch)
        e = np.array(errors)  # (cached steps, [cached eps error, reused eps error])
        assert len(e) == 20 and 0 < e[:, 0].max() <= 0.25, (branch, e[:, 0].max())
        assert e[:, 0].mean() < (0.75 if branch == 0 else 0.4) * e[:, 1].mean(), (branch, e.mean(axis=0))
        means.append(e[:, 0].mean())
    assert means[0] > max(means[1:])

# ---- the step plan ------------------------------------------------------------------------------------
def test_positions_of_pndm_img2img_and_unknown_timesteps():
    pndm = [831, 665, 665, 499, 333, 167, 1]  # PNDM's list for 6 steps (reference §3.2)
    assert deepcache.step_positions(pndm, pndm) == [0, 1, 1, 3, 4, 5, 6]
    assert deepcache.step_positions(pndm, pndm[2:]) == [0, 2, 3, 4, 5]  # a run starting on the repeat
    assert deepcache.step_positions(pndm, pndm[3:]) == [0, 1, 2, 3]
    assert deepcache.step_positions([999, 759, 499], [5, 4]) == [0, 1]  # not in the list: counted
    sched = schedulers.make("pndm", base.SCHEDULER_CONFIG)
    sched.set_timesteps(6)
    assert [int(t) for t in sched.timesteps] == pndm


def test_uniform_and_quadratic_full_steps():
    assert deepcache.DeepCache(3).full_steps(10) == [0, 3, 6, 9]
    quad = deepcache.DeepCache(5, schedule="quadratic")
    assert quad.full_steps(50) == [0, 5, 9, 13, 17, 21, 26, 31, 37, 43]  # the research SD 1.5 script's
    assert deepcache.quadratic_full_steps(50, 3) == [0, 3, 6, 8, 11, 13, 15, 17, 20, 22, 25, 28, 32, 35, 38, 42, 46]
    assert deepcache.DeepCache(1, schedule="quadratic").full_steps(7) == list(range(7))
    assert deepcache.quadratic_full_steps(4, 5) == [0]


@settings(max_examples=200)
@given(n=st.integers(1, 400), interval=st.integers(2, 50))
def test_quadratic_schedule_shape(n, interval):
    steps = deepcache.quadratic_full_steps(n, interval)
    assert steps[0] == 0 and steps == sorted(set(steps)) and steps[-1] < n
    assert len(steps) == math.ceil(n / interval)


@pytest.mark.parametrize("kwargs, message", [
    (dict(cache_interval=0), "cache interval must be an integer >= 1, got 0"),
    (dict(cache_interval=2.5), "cache interval must be an integer >= 1, got 2.5"),
    (dict(cache_interval=True), "cache interval must be an integer >= 1, got True"),
    (dict(cache_interval=2, cache_branch=-1), "cache branch must be an integer >= 0, got -1"),
    (dict(cache_interval=2, cache_branch=4), "cache branch must be from 0 to 3 for this UNet, got 4"),
    (dict(cache_interval=2, cache_schedule="cosine"), "unknown DeepCache schedule 'cosine'"),
])
def test_bad_options_are_input_errors_before_any_work(riff, kwargs, message):
    def never(*a):
        raise AssertionError("a step ran")

    for call in (lambda: riff.generate_spectrogram("jazz", duration_s=0.64, steps=2, callback=never, **kwargs),
                 lambda: riff.interpolate_styles("a", "b", 0.5, duration_s=0.64, steps=2, callback=never, **kwargs),
                 lambda: riff.riffuse({"prompt": "a"}, {"prompt": "b"}, 0.5, base.init_image(), steps=2,
                                      callback=never, **kwargs)):
        with pytest.raises(InputError, match=message.replace("(", r"\(")):
            call()
