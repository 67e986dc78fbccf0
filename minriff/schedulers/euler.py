"""Euler and Euler ancestral (Karras et al. 2022, k-diffusion) on diffusers' sigma tables.

The model input is x / sqrt(sigma^2 + 1); timesteps are float (linspace spacing by default) and the
sigma of a fractional timestep is linearly interpolated in the training table (float64, then f32).
"""
from __future__ import annotations

import numpy as np

from minriff.errors import ConfigError, InputError
from minriff.schedulers.common import (
    F32,
    StepIndexMixin,
    alphas_cumprod,
    check_steps,
    karras_sigmas,
    like,
    read_config,
    sigma_table,
    sigma_to_t,
    spaced_timesteps,
)

DEFAULTS = dict(timestep_spacing="linspace", use_karras_sigmas=False, interpolation_type="linear",
                final_sigmas_type="zero")


class EulerScheduler(StepIndexMixin):
    name = "euler"
    supports_karras = True

    def __init__(self, config: dict):
        self.config = read_config(config, DEFAULTS, self.name)
        if self.config["interpolation_type"] != "linear":
            raise ConfigError(f"{self.name}: interpolation_type {self.config['interpolation_type']!r} "
                             "is not supported (only 'linear')")
        if not self.supports_karras:  # diffusers' EulerAncestral has no such option and ignores the key
            self.config["use_karras_sigmas"] = False
        if self.name != "euler":  # only diffusers' Euler reads final_sigmas_type
            self.config["final_sigmas_type"] = "zero"
        if self.config["final_sigmas_type"] not in ("zero", "sigma_min"):
            raise ConfigError(f"{self.name}: final_sigmas_type {self.config['final_sigmas_type']!r} is not one "
                             "of zero, sigma_min")
        self.alphas_cumprod = alphas_cumprod(self.config)
        self.sigmas = np.concatenate([sigma_table(self.alphas_cumprod)[::-1], [F32(0)]]).astype(F32)
        self.timesteps = None
        self.num_inference_steps = None

    @property
    def init_noise_sigma(self) -> float:
        sigma_max = float(self.sigmas.max())
        if self.config["timestep_spacing"] in ("linspace", "trailing"):
            return sigma_max
        return float(np.sqrt(F32(sigma_max) * F32(sigma_max) + F32(1)))

    def set_timesteps(self, n: int) -> None:
        n = check_steps(n, int(self.config["num_train_timesteps"]))
        timesteps = spaced_timesteps(self.config, n, np.float32)
        table = sigma_table(self.alphas_cumprod)
        sigmas = np.interp(timesteps, np.arange(len(table)), table)
        if self.config["use_karras_sigmas"]:
            sigmas = karras_sigmas(float(sigmas[-1]), float(sigmas[0]), n)
            timesteps = sigma_to_t(sigmas, np.log(table))
        last = table[0] if self.config["final_sigmas_type"] == "sigma_min" else 0.0
        self.sigmas = np.concatenate([sigmas, [last]]).astype(F32)
        self.timesteps = np.asarray(timesteps).astype(F32)
        self.num_inference_steps = n
        self._step_index = None
        self._begin_index = None

    def scale_model_input(self, x, t):
        self._require_timesteps()
        self._init_step_index(t)
        sigma = self.sigmas[self._step_index]
        return x / np.sqrt(sigma * sigma + F32(1))

    def step(self, eps, t, x, generator=None, **_):
        self._require_timesteps()
        self._init_step_index(t)
        sigma = self.sigmas[self._step_index]
        x_prev = self._update(eps, x, sigma, self.sigmas[self._step_index + 1], generator)
        self._step_index += 1
        return x_prev

    def _update(self, eps, x, sigma, sigma_next, generator):
        x0 = x - sigma * eps
        derivative = (x - x0) / sigma
        return x + derivative * (sigma_next - sigma)

    def add_noise(self, x0, noise, t):
        """x0 + sigma(t) noise (sigma of the step t belongs to, diffusers' begin-index rules)."""
        self._require_timesteps()
        ts = np.asarray(t).reshape(-1)
        sig = np.array([self.sigmas[self._noise_index(v)] for v in ts], F32)
        if sig.size == 1:
            return x0 + sig[0] * noise
        return x0 + like(sig.reshape((-1,) + (1,) * (x0.ndim - 1)), x0) * noise


class EulerAncestralScheduler(EulerScheduler):
    """Euler step down to sigma_down, then fresh noise of size sigma_up from `generator`."""
    name = "euler_a"
    supports_karras = False

    def _update(self, eps, x, sigma, sigma_next, generator):
        if generator is None:
            raise InputError("euler_a: the ancestral step needs a generator (rng.Generator)")
        x0 = x - sigma * eps
        sigma_up = np.sqrt(sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) / (sigma * sigma))
        sigma_down = np.sqrt(sigma_next * sigma_next - sigma_up * sigma_up)
        derivative = (x - x0) / sigma
        x_prev = x + derivative * (sigma_down - sigma)
        noise = like(generator.randn(tuple(eps.shape)), x)
        return x_prev + noise * sigma_up
