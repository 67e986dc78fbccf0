"""LCM, the latent consistency model sampler (Luo et al. 2023), as diffusers' LCMScheduler.

For UNets distilled for consistency (LCM-LoRA, or a full LCM UNet): each step maps x_t straight to an
estimate of the clean latents (`denoised`) and re-noises it to the next timestep with fresh noise
from the generator; the last step returns `denoised` and draws nothing. With such a LoRA, 2-8 steps
at guidance 1-2 give good images. Without one, a plain SD or Riffusion UNet gives poor images at
those step counts: the schedule skips most of the trajectory, it is not a better solver.

    sched = LCMScheduler(config)                  # any diffusers scheduler config (Riffusion's PNDM one)
    sched.set_timesteps(4)                        # [999, 759, 499, 259]
    sched.set_timesteps(4, strength=0.5)          # LatentConsistencyModelImg2ImgPipeline: [499, 379, 259, 139]
    sched.set_timesteps(timesteps=[999, 499])     # custom, descending, below num_train_timesteps

Timesteps: k = T // original_inference_steps (20 for 50); the candidates k*j - 1 for j = 1 ..
int(original_inference_steps * strength), reversed, picked at floor(linspace(0, count, n, endpoint=False)).
Config keys read: the beta table, `original_inference_steps` (50), `timestep_scaling` (10),
`prediction_type` (epsilon, v_prediction, sample), `clip_sample` (+ range). `set_alpha_to_one`,
`steps_offset` and `timestep_spacing` (which Riffusion's PNDM config sets) change nothing here.

One deliberate difference from diffusers: with custom `timesteps` and strength < 1, diffusers counts
the last step against the untrimmed list, so its last step re-noises (draws noise, leaves it in the
output); here the last step of the trimmed list is the last step, as everywhere else.
"""
from __future__ import annotations

import numpy as np

from minriff.errors import ConfigError, InputError
from minriff.schedulers.common import (
    F32,
    StepIndexMixin,
    alphas_cumprod,
    as_index,
    check_steps,
    check_strength,
    host,
    like,
    read_config,
)
from minriff.schedulers.pndm import add_noise_ddpm

DEFAULTS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", original_inference_steps=50,
                clip_sample=False, clip_sample_range=1.0, set_alpha_to_one=True, thresholding=False,
                timestep_scaling=10.0, rescale_betas_zero_snr=False)
PREDICTIONS = ("epsilon", "v_prediction", "sample")
SIGMA_DATA = F32(0.5)


def boundary_scalings(t, timestep_scaling: float) -> tuple[F32, F32]:
    """(c_skip, c_out) of the consistency parametrisation at integer timestep t, in float32 as
    diffusers computes them from a tensor timestep: T = t * scaling, c_skip = sd^2 / (T^2 + sd^2),
    c_out = T / sqrt(T^2 + sd^2) with sd = 0.5 (c_skip ~ 2.5e-9 at t = 999, c_out ~ 1)."""
    scaled = F32(t) * F32(timestep_scaling)
    denom = scaled * scaled + SIGMA_DATA * SIGMA_DATA
    return SIGMA_DATA * SIGMA_DATA / denom, scaled / np.sqrt(denom)


class ConsistencySchedulerBase(StepIndexMixin):
    """What LCM and TCD share: config, timesteps (n, strength, custom), step index, x0, add_noise."""

    name = "lcm"
    order = 1
    init_noise_sigma = 1.0

    def __init__(self, config: dict):
        cfg = self.config = read_config(config, DEFAULTS, self.name, PREDICTIONS)
        for key in ("thresholding", "rescale_betas_zero_snr"):
            if cfg[key]:
                raise ConfigError(f"{self.name}: {key}=true is not supported")
        T = int(cfg["num_train_timesteps"])
        if config.get("original_inference_steps") is None:  # the default 50 cannot exceed a short schedule
            cfg["original_inference_steps"] = min(cfg["original_inference_steps"], T)
        orig = cfg["original_inference_steps"]
        if isinstance(orig, bool) or not isinstance(orig, (int, np.integer)) or not 1 <= orig <= T:
            raise ConfigError(f"{self.name}: original_inference_steps must be an integer in [1, {T}], got {orig!r}")
        self.alphas_cumprod = alphas_cumprod(cfg)
        self.final_alpha_cumprod = F32(1.0) if cfg["set_alpha_to_one"] else self.alphas_cumprod[0]
        self.timesteps = None
        self.num_inference_steps = None
        self.custom_timesteps = False

    # ---- timesteps ----------------------------------------------------------------------------
    def _origin_timesteps(self, original_inference_steps, strength: float) -> tuple[np.ndarray, int]:
        """(ascending candidate timesteps, the most inference steps allowed)."""
        orig = check_original_steps(original_inference_steps, self.config)
        k = int(self.config["num_train_timesteps"]) // orig
        return np.arange(1, int(orig * strength) + 1, dtype=np.int64) * k - 1, orig

    def set_timesteps(self, num_inference_steps: int | None = None, original_inference_steps: int | None = None,
                      timesteps=None, strength: float = 1.0) -> None:
        """n steps picked from the distillation schedule, or custom `timesteps` (descending); `strength`
        < 1 starts lower (LatentConsistencyModelImg2ImgPipeline's img2img: still n steps)."""
        if (num_inference_steps is None) == (timesteps is None):
            raise InputError(f"{self.name}: pass exactly one of num_inference_steps and timesteps")
        strength = check_strength(strength)
        T = int(self.config["num_train_timesteps"])
        origin, max_steps = self._origin_timesteps(original_inference_steps, strength)
        if timesteps is not None:
            ts = _check_custom(timesteps, T, self.name)
            n = len(ts)
            t_start = max(n - min(int(n * strength), n), 0)
            ts = ts[t_start:]
            if len(ts) == 0:
                raise InputError(f"{self.name}: strength {strength} leaves none of the {n} custom timesteps")
        else:
            n = check_steps(num_inference_steps, T)
            if len(origin) // n < 1:
                raise InputError(f"{self.name}: {n} steps need at least {n} candidate timesteps, but "
                                 f"original_inference_steps ({max_steps}) x strength ({strength}) gives "
                                 f"{len(origin)}; lower the steps or raise the strength")
            if n > max_steps:
                raise InputError(f"{self.name}: {n} steps is more than original_inference_steps={max_steps}")
            descending = origin[::-1]
            picks = np.floor(np.linspace(0, len(descending), num=n, endpoint=False)).astype(np.int64)
            ts = descending[picks]
        self.timesteps = np.ascontiguousarray(ts, dtype=np.int64)
        self.num_inference_steps = n
        self.custom_timesteps = timesteps is not None
        self._step_index = None
        self._begin_index = None

    def scale_model_input(self, x, t=None):
        return x

    # ---- stepping -----------------------------------------------------------------------------
    def _begin_step(self, t) -> tuple[int, int | None]:
        """(this step's timestep, the next one or None on the last step); advances nothing."""
        self._require_timesteps()
        self._init_step_index(t)
        i = self._step_index
        if i >= len(self.timesteps):
            raise InputError(f"{self.name}: stepped past the last timestep; call set_timesteps again")
        nxt = int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else None
        return as_index(host(t)), nxt

    def _predict(self, model_output, x, a_t: F32):
        """(x0, eps) from the model output, in diffusers' operation order."""
        b_t = F32(1) - a_t
        kind = self.config["prediction_type"]
        if kind == "epsilon":
            return (x - np.sqrt(b_t) * model_output) / np.sqrt(a_t), model_output
        if kind == "v_prediction":
            x0 = np.sqrt(a_t) * x - np.sqrt(b_t) * model_output
            return x0, np.sqrt(a_t) * model_output + np.sqrt(b_t) * x
        return model_output, (x - np.sqrt(a_t) * model_output) / np.sqrt(b_t)

    def _noise(self, generator, model_output, x):
        if generator is None:
            raise InputError(f"{self.name}: this step adds fresh noise and needs a generator (rng.Generator)")
        return like(generator.randn(tuple(model_output.shape)), x)

    def add_noise(self, x0, noise, t):
        return add_noise_ddpm(self.alphas_cumprod, x0, noise, t)


class LCMScheduler(ConsistencySchedulerBase):
    name = "lcm"

    def step(self, model_output, timestep, sample, generator=None, **_):
        """x_t -> x at the next timestep: denoised = c_out x0 + c_skip x_t, then re-noised with a draw
        from `generator` (shape of model_output), except on the last step. `self.denoised` keeps the
        clean estimate of this step."""
        t, prev_t = self._begin_step(timestep)
        last = prev_t is None
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[t if last else prev_t]
        c_skip, c_out = boundary_scalings(t, self.config["timestep_scaling"])
        x0, _ = self._predict(model_output, sample, a_t)
        if self.config["clip_sample"]:
            r = float(self.config["clip_sample_range"])
            x0 = x0.clip(-r, r)
        denoised = c_out * x0 + c_skip * sample
        self.denoised = denoised
        if last:
            x_prev = denoised
        else:
            noise = self._noise(generator, model_output, sample)
            x_prev = np.sqrt(a_prev) * denoised + np.sqrt(F32(1) - a_prev) * noise
        self._step_index += 1
        return x_prev


def check_original_steps(value, cfg: dict) -> int:
    if value is None:
        return int(cfg["original_inference_steps"])
    T = int(cfg["num_train_timesteps"])
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= T:
        raise InputError(f"original_inference_steps must be an integer in [1, {T}], got {value!r}")
    return int(value)


def _check_custom(timesteps, T: int, name: str) -> np.ndarray:
    ts = np.asarray(host(timesteps))
    if ts.ndim != 1 or ts.size == 0 or not np.issubdtype(ts.dtype, np.number):
        raise InputError(f"{name}: custom timesteps must be a non-empty list of integers")
    if not np.array_equal(ts, np.floor(ts)):
        raise InputError(f"{name}: custom timesteps must be integers, got {ts.tolist()}")
    ts = ts.astype(np.int64)
    if (np.diff(ts) >= 0).any():
        raise InputError(f"{name}: custom timesteps must be strictly descending, got {ts.tolist()}")
    if ts[0] >= T or ts[-1] < 0:
        raise InputError(f"{name}: custom timesteps must lie in [0, {T - 1}], got {ts.tolist()}")
    return ts
