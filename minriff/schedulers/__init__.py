"""Diffusion schedulers, numerically matching current diffusers, built from a scheduler_config.json dict.

    sched = schedulers.make("dpmpp2m", config)   # pndm | ddim | dpmpp2m | euler | euler_a | lms | lcm | tcd
    sched.set_timesteps(30)
    x = gen.randn(shape) * np.float32(sched.init_noise_sigma)
    for t in sched.timesteps:
        eps = unet(sched.scale_model_input(x, t), t, context)
        x = sched.step(eps, t, x, generator=gen)   # gen: rng.Generator (euler_a, ddim eta > 0, lcm, tcd)

lcm and tcd are few-step samplers for consistency-distilled UNets (LCM-LoRA, TCD-LoRA; 2-8 steps,
guidance 1-2): `make("tcd", config, gamma=0.3)` passes options to the constructor.

Step arithmetic is float32 with the same operation order as diffusers; arrays may be NumPy or CuPy
(coefficients are host float32 scalars). img2img: `img2img_timesteps` (current diffusers) and
`riffusion_img2img_schedule` (the original Riffusion server, reference/riffusion.md §2.4).
`check_config` (config.py) is the one check of a scheduler config dict: weights files and every
scheduler built here go through it.
"""
from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import numpy as np

from minriff.errors import ConfigError, InputError
from minriff.schedulers.common import check_strength
from minriff.schedulers.config import check_config
from minriff.schedulers.ddim import DDIMScheduler
from minriff.schedulers.dpm import DPMSolverMultistepScheduler
from minriff.schedulers.euler import EulerAncestralScheduler, EulerScheduler
from minriff.schedulers.lcm import LCMScheduler
from minriff.schedulers.lms import LMSScheduler
from minriff.schedulers.pndm import PNDMScheduler
from minriff.schedulers.tcd import TCDScheduler

SCHEDULERS = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "dpmpp2m": DPMSolverMultistepScheduler,
    "euler": EulerScheduler,
    "euler_a": EulerAncestralScheduler,
    "lms": LMSScheduler,
    "lcm": LCMScheduler,
    "tcd": TCDScheduler,
}
NAMES = tuple(SCHEDULERS)


@runtime_checkable
class Scheduler(Protocol):
    """What the sampling loop needs of a scheduler; `Riffusion(scheduler=obj)` takes any object with
    these (a class of your own works; the built-in ones match diffusers' arithmetic).

    The loop, per call (on a deep copy of the object, so state never leaks between calls):
        sched.set_timesteps(steps)                 # must (re)build `timesteps` and reset any state
        x = noise * sched.init_noise_sigma         # or, img2img: sched.add_noise(z, noise, t0)
        for t in sched.timesteps:                  # descending, e.g. [981, 961, ..., 1]
            eps = unet(sched.scale_model_input(x, t), t, text)
            x = sched.step(eps, t, x, generator=gen)   # -> the sample at the next timestep
    Optional: `order` (model calls per step for the img2img start index, default 1),
    `set_begin_index(i)` (told where img2img starts)."""

    timesteps: object
    init_noise_sigma: float

    def set_timesteps(self, num_inference_steps: int) -> None: ...

    def scale_model_input(self, sample, timestep): ...

    def step(self, model_output, timestep, sample, generator=None): ...

    def add_noise(self, original_samples, noise, timesteps): ...


def make(name: str, config: dict, **options):
    """A scheduler by name from a diffusers scheduler config dict (keys it does not use are ignored,
    missing keys take that scheduler's diffusers default, like `Scheduler.from_config`); `options`
    go to its constructor (only tcd has one: `gamma`)."""
    if name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {name!r}; valid: {', '.join(NAMES)}")
    cls = SCHEDULERS[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "config"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InputError(f"scheduler {name!r} takes no option {', '.join(unknown)}"
                         + (f" (it takes {', '.join(sorted(accepted))})" if accepted else ""))
    return cls(config, **options)


def sd_pipeline_config(config: dict) -> dict:
    """`config` as current diffusers' StableDiffusionPipeline and StableDiffusionImg2ImgPipeline run
    it: their constructors rewrite the scheduler they are given to `steps_offset` 1 and `clip_sample`
    off (DDIM's own default clips x0 to [-1, 1], which the Riffusion/SD 1.x configs do not mention).
    diffusers' ControlNet pipelines and the original RiffusionPipeline take the config as it is."""
    return {**config, "steps_offset": 1, "clip_sample": False}


def img2img_timesteps(scheduler, steps: int, strength: float) -> np.ndarray:
    """Current diffusers StableDiffusionImg2ImgPipeline.get_timesteps, on a scheduler already given
    `set_timesteps(steps)`: skip the first steps - int(steps * strength) steps. The first returned
    timestep is where the image latents get their noise (`add_noise(z, noise, ts[0])`); schedulers
    that track a step index start at it (set_begin_index, as diffusers)."""
    strength = check_strength(strength)
    if scheduler.timesteps is None:
        raise InputError("call set_timesteps(steps) before img2img_timesteps")
    init = min(int(steps * strength), steps)
    t_start = max(steps - init, 0) * getattr(scheduler, "order", 1)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start)
    timesteps = scheduler.timesteps[t_start:]
    if len(timesteps) == 0:
        raise InputError(f"img2img strength {strength} with {steps} steps leaves no denoising step")
    return timesteps


def riffusion_img2img_schedule(scheduler, steps: int, strength: float) -> tuple:
    """The original Riffusion `interpolate_img2img` schedule (diffusers 0.9 logic), exactly:
    init = min(int(steps * strength) + steps_offset, steps); noise level t0 = timesteps[-init];
    loop over timesteps[max(steps - init + steps_offset, 0):]. Returns (t0, timesteps).

    With PNDM (whose set_timesteps is unchanged since 0.9) this reproduces the original bit for bit,
    quirk included: the loop list (e.g. 741, 721, 701 ... 1 for 50 steps at 0.75) lacks PNDM's
    duplicated entry, yet the PLMS counter still treats call #2 as the "redo" of the first interval,
    so from call #3 on the model is told t=701 while the sample sits at 721 — one interval is skipped
    (reference/riffusion.md §2.6). Call it on a fresh `set_timesteps(steps)` so the counter starts
    at 0. Only the schedule is the original's for other schedulers (0.9 spaced those differently)."""
    strength = check_strength(strength)
    if scheduler.timesteps is None:
        raise InputError("call set_timesteps(steps) before riffusion_img2img_schedule")
    offset = int(scheduler.config.get("steps_offset", 0) or 0)
    init = min(int(steps * strength) + offset, steps)
    t0 = scheduler.timesteps[-init]
    t_start = max(steps - init + offset, 0)
    return t0, scheduler.timesteps[t_start:]


__all__ = ["make", "check_config", "NAMES", "SCHEDULERS", "Scheduler", "img2img_timesteps",
           "riffusion_img2img_schedule", "PNDMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler",
           "EulerScheduler", "EulerAncestralScheduler", "LMSScheduler", "LCMScheduler", "TCDScheduler"]
