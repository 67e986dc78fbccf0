"""`minriff.Riffusion` behaviour on the committed tiny model: relations between the entry points,
error messages, audio helpers. Images are 64 px wide (0.64 s) to stay fast."""
from __future__ import annotations

import numpy as np
import pytest

from minriff.errors import InputError
from support import FIXTURES

WEIGHTS = FIXTURES / "pipeline" / "tiny_sd.safetensors"


@pytest.fixture(scope="module", autouse=True)
def serial_numba():
    """Tiny models are dominated by thread start-up on a small shared machine: one thread here."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


@pytest.fixture(scope="module")
def riff():
    from minriff import Riffusion

    return Riffusion.load(WEIGHTS, quiet=True)


def seed_image(width=64):
    y, x = np.mgrid[0:512, 0:width]
    g = (160 + 60 * np.sin(x / 3.0) * np.cos(y / 29.0)).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


A = {"prompt": "rock guitar", "seed": 5, "denoising": 0.75, "guidance": 7.0}
B = {"prompt": "calm violin", "seed": 9, "denoising": 0.75, "guidance": 7.0}


def test_interpolate_endpoints_are_the_plain_prompts(riff):
    kw = dict(duration_s=0.64, steps=2, guidance=7.0)
    a = riff.interpolate_styles("rock guitar", "calm violin", 0.0, seed_a=5, seed_b=9, **kw)
    b = riff.interpolate_styles("rock guitar", "calm violin", 1.0, seed_a=5, seed_b=9, **kw)
    assert np.array_equal(a, riff.generate_spectrogram("rock guitar", seed=5, **kw))
    # the original's lerp a + alpha (b - a) is not bit-exact at alpha = 1 in float32: nearly equal
    b_alone = riff.generate_spectrogram("calm violin", seed=9, **kw)
    assert np.mean(np.abs(b.astype(int) - b_alone) <= 1) > 0.999
    mid = riff.interpolate_styles("rock guitar", "calm violin", 0.5, seed_a=5, seed_b=9, **kw)
    assert not np.array_equal(mid, a) and not np.array_equal(mid, b)


def test_interpolate_with_a_seed_image_is_riffuse(riff):
    img = seed_image()
    via_interp = riff.interpolate_styles("rock guitar", "calm violin", 0.25, seed_a=5, seed_b=9, steps=4,
                                         seed_image=img, denoising=0.75)
    assert np.array_equal(via_interp, riff.riffuse(A, B, 0.25, img, steps=4))


def test_riffuse_mask_black_keeps_the_seed_image(riff):
    from minriff import schedulers
    from minriff.latents import slerp
    from minriff.rng import Generator

    img = seed_image()
    kept = riff.riffuse(A, B, 0.5, img, mask=np.zeros_like(img), steps=4)
    free = riff.riffuse(A, B, 0.5, img, steps=4)
    white = riff.riffuse(A, B, 0.5, img, mask=np.full_like(img, 255), steps=4)
    assert np.array_equal(white, free)  # white = regenerate everything = no mask
    # All black: after the last step the latents are replaced by the seed latents noised to the
    # last timestep (t = 1 for PNDM): decode(add_noise(z, slerped noise, 1)), whatever the UNet said.
    z = riff.encode_image(img, Generator(A["seed"]))
    noise = slerp(0.5, Generator(A["seed"]).randn(z.shape), Generator(B["seed"]).randn(z.shape))
    sched = schedulers.make("pndm", riff.scheduler_config)
    sched.set_timesteps(4)
    assert int(sched.timesteps[-1]) == 1
    expected = riff.decode_latents(np.asarray(sched.add_noise(z, noise, 1), dtype=np.float32))
    assert np.array_equal(kept, expected)
    assert not np.array_equal(kept, free)


def test_any_width_is_stretched_to_64_px_multiples_and_back(riff):
    img = seed_image(100)  # e.g. `minriff audio2image` of a 1-second clip
    out = riff.generate_spectrogram("x", init_image=img, strength=0.5, steps=4, seed=1)
    assert out.shape == (512, 100, 3)
    mask = np.zeros_like(img)
    mask[:, 50:] = 255
    clip = riff.riffuse(A, B, 0.5, img, mask=mask, steps=4)
    assert clip.shape == (512, 100, 3)
    # the same as running at 128 px by hand and stretching back
    from minriff.latents import fit_width

    by_hand = riff.riffuse(A, B, 0.5, fit_width(img, 128), mask=fit_width(mask, 128, nearest=True), steps=4)
    assert np.array_equal(clip, fit_width(by_hand, 100))


def test_riffuse_other_schedulers_run(riff):
    img = seed_image()
    out = riff.riffuse(A, B, 0.5, img, steps=4, scheduler="ddim")
    assert out.shape == img.shape and out.dtype == np.uint8


def test_img2img_strength_changes_how_much_is_kept(riff):
    img = seed_image()
    low = riff.generate_spectrogram("x", init_image=img, strength=0.3, steps=10, seed=1)
    high = riff.generate_spectrogram("x", init_image=img, strength=1.0, steps=10, seed=1)
    through_vae = riff.decode_latents(riff.encode_image(img, __import__("minriff.rng").rng.Generator(1)))
    d_low = np.abs(low.astype(int) - through_vae).mean()
    d_high = np.abs(high.astype(int) - through_vae).mean()
    assert d_low < d_high


@pytest.mark.parametrize("call,match", [
    (lambda r: r.generate_spectrogram("", steps=1), "prompt is empty"),
    (lambda r: r.generate_spectrogram("x", steps=0), "steps"),
    (lambda r: r.generate_spectrogram("x", guidance=-1.0), "guidance"),
    (lambda r: r.generate_spectrogram("x", duration_s=31), "limit of 30 s"),
    (lambda r: r.generate_spectrogram("x", scheduler="plms"), "unknown scheduler"),
    (lambda r: r.generate_spectrogram("x", init_image=np.zeros((500, 64, 3), np.uint8)), "64x500 px"),
    (lambda r: r.generate_spectrogram("x", init_image=np.zeros((256, 64, 3), np.uint8)), "64x256 px"),
    (lambda r: r.generate_spectrogram("x", init_image=seed_image(), strength=0.0), "strength"),
    (lambda r: r.generate_spectrogram("x", init_image=seed_image(), strength=0.05, steps=10), "no denoising step"),
    (lambda r: r.interpolate_styles("a", "b", 1.5), "alpha"),
    (lambda r: r.interpolate_styles("a", "", 0.5), "prompt B is empty"),
    (lambda r: r.riffuse(A, B, -0.1, seed_image()), "alpha"),
    (lambda r: r.riffuse(A, dict(B, denoising=1.5), 0.5, seed_image()), "end denoising"),
    (lambda r: r.riffuse(A, {"prompt": "b"}, 0.5, seed_image()), "missing required field 'seed'"),
    (lambda r: r.riffuse(A, B, 0.5, seed_image(), mask=seed_image(128)), "must match"),
    (lambda r: r.audio_to_spectrogram(np.zeros((1, 44100), np.float32), sample_rate=22050), "44100 Hz"),
])
def test_bad_input_is_an_input_error(riff, call, match):
    with pytest.raises(InputError, match=match):
        call(riff)


def test_audio_round_trip_keeps_the_geometry(riff):
    image = riff.generate_spectrogram("x", duration_s=0.64, steps=1, seed=0)
    wave = riff.spectrogram_to_audio(image)
    assert wave.dtype == np.float32 and wave.shape == (1, 63 * 441)
    again = riff.audio_to_spectrogram(wave)
    assert again.shape == (512, 64, 3) and again.dtype == np.uint8


def test_wide_images_convert_in_crossfaded_pieces(riff, monkeypatch):
    from minriff.audio import join

    y, x = np.mgrid[0:512, 0:256]  # a structured 256-px spectrogram: pulses in bands
    grey = (200 - 80 * (np.sin(x / 3.0) > 0.5) * (np.cos(y / 29.0) > 0)).astype(np.uint8)
    image = np.repeat(grey[:, :, None], 3, axis=2)
    whole = riff.spectrogram_to_audio(image)
    monkeypatch.setattr(join, "CHUNK_PX", 128)
    monkeypatch.setattr(join, "OVERLAP_PX", 32)
    pieces = riff.spectrogram_to_audio(image)
    assert pieces.shape == whole.shape == (1, 255 * 441)
    # Both reconstruct the same spectrogram (phases differ): compare re-analysed images, with noise
    # as the yardstick of "unrelated" (measured here: whole 53.2, pieces 53.0, noise 84.4).
    def err(wave):
        return np.abs(riff.audio_to_spectrogram(wave).astype(int) - image).mean()

    noise = np.random.default_rng(0).standard_normal(whole.shape).astype(np.float32) * 0.1
    assert err(pieces) < err(whole) + 3 and err(pieces) < 0.8 * err(noise)


# ---- per-step callback


class Recorder:
    """A callback keeping what it was given (latents copied: it receives a read-only view)."""

    def __init__(self, try_to_write=False):
        self.calls, self.try_to_write, self.write_refused = [], try_to_write, 0

    def __call__(self, step_index, total_steps, timestep, latents):
        self.calls.append((step_index, total_steps, timestep, latents.copy()))
        if self.try_to_write:
            try:
                latents[...] = 0.0
            except ValueError:
                self.write_refused += 1

    @property
    def indices(self):
        return [c[0] for c in self.calls]


def test_callback_sees_every_step_and_changes_nothing(riff):
    from minriff import schedulers

    kw = dict(duration_s=0.64, steps=3, guidance=7.0, seed=3, scheduler="ddim")
    plain = riff.generate_spectrogram("x", **kw)
    rec = Recorder(try_to_write=True)
    with_callback = riff.generate_spectrogram("x", callback=rec, **kw)
    assert np.array_equal(with_callback, plain)
    assert rec.indices == [0, 1, 2] and all(c[1] == 3 for c in rec.calls)
    assert rec.write_refused == 3  # the view is read-only
    sched = schedulers.make("ddim", riff.scheduler_config)
    sched.set_timesteps(3)
    assert [c[2] for c in rec.calls] == [int(t) for t in sched.timesteps]
    assert all(isinstance(c[2], (int, float)) for c in rec.calls)
    # the last step's latents are what gets decoded
    assert rec.calls[-1][3].shape == (1, 4, 64, 8)
    assert np.array_equal(riff.decode_latents(rec.calls[-1][3]), plain)
    assert not np.array_equal(rec.calls[0][3], rec.calls[-1][3])


def test_callback_total_is_the_steps_actually_run_in_img2img(riff):
    img = seed_image()
    rec = Recorder()
    out = riff.generate_spectrogram("x", init_image=img, strength=0.5, steps=4, seed=1, callback=rec)
    assert rec.indices == [0, 1] and all(c[1] == 2 for c in rec.calls)
    assert np.array_equal(out, riff.generate_spectrogram("x", init_image=img, strength=0.5, steps=4, seed=1))


def test_callback_in_interpolate_and_riffuse(riff):
    kw = dict(duration_s=0.64, steps=2, guidance=7.0)
    rec = Recorder(try_to_write=True)
    out = riff.interpolate_styles("rock guitar", "calm violin", 0.5, seed_a=5, seed_b=9, callback=rec, **kw)
    assert rec.indices == [0, 1] and rec.write_refused == 2
    assert np.array_equal(out, riff.interpolate_styles("rock guitar", "calm violin", 0.5, seed_a=5, seed_b=9, **kw))

    img = seed_image()
    mask = np.zeros_like(img)
    mask[:, 32:] = 255
    rec = Recorder(try_to_write=True)
    out = riff.riffuse(A, B, 0.5, img, mask=mask, steps=4, callback=rec)
    n = len(rec.calls)
    assert n >= 1 and rec.indices == list(range(n)) and all(c[1] == n for c in rec.calls)
    assert rec.write_refused == n
    assert np.array_equal(out, riff.riffuse(A, B, 0.5, img, mask=mask, steps=4))
    timesteps = [c[2] for c in rec.calls]
    assert timesteps == sorted(timesteps, reverse=True)  # PNDM repeats its first timestep: non-increasing
    # interpolate_styles with a seed image is riffuse, callback included
    rec2 = Recorder()
    riff.interpolate_styles("rock guitar", "calm violin", 0.5, seed_a=5, seed_b=9, steps=4, seed_image=img,
                            callback=rec2)
    assert rec2.indices == list(range(len(rec2.calls))) and len(rec2.calls) >= 1


def test_an_exception_in_the_callback_stops_the_run(riff):
    class Stop(Exception):
        pass

    seen = []

    def stop_after_two(i, n, t, latents):
        seen.append(i)
        if i == 1:
            raise Stop

    with pytest.raises(Stop):
        riff.generate_spectrogram("x", duration_s=0.64, steps=5, seed=0, callback=stop_after_two)
    assert seen == [0, 1]


@pytest.mark.parametrize("call", [
    lambda r, cb: r.generate_spectrogram("x", steps=1, callback=cb),
    lambda r, cb: r.interpolate_styles("a", "b", 0.5, steps=1, callback=cb),
    lambda r, cb: r.riffuse(A, B, 0.5, seed_image(), steps=1, callback=cb),
])
@pytest.mark.parametrize("bad", [5, "print", [print]])
def test_a_callback_that_is_not_callable_is_an_input_error(riff, call, bad):
    with pytest.raises(InputError, match=r"callback must be a function .* got " + type(bad).__name__):
        call(riff, bad)
