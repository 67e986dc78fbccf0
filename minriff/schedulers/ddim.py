"""DDIM (Song et al. 2021): deterministic at eta=0, with optional x0 clipping (clip_sample)."""
from __future__ import annotations

import numpy as np

from minriff.errors import ConfigError, InputError
from minriff.schedulers.common import (
    F32,
    alphas_cumprod,
    as_index,
    check_steps,
    host,
    like,
    read_config,
    spaced_timesteps,
)
from minriff.schedulers.pndm import add_noise_ddpm

DEFAULTS = dict(clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=True, timestep_spacing="leading",
                thresholding=False)


class DDIMScheduler:
    order = 1
    init_noise_sigma = 1.0

    def __init__(self, config: dict):
        self.config = read_config(config, DEFAULTS, "ddim")
        if self.config["thresholding"]:
            raise ConfigError("ddim: dynamic thresholding is not supported")
        self.alphas_cumprod = alphas_cumprod(self.config)
        self.final_alpha_cumprod = F32(1.0) if self.config["set_alpha_to_one"] else self.alphas_cumprod[0]
        self.num_inference_steps = None
        self.timesteps = None

    def set_timesteps(self, n: int) -> None:
        n = check_steps(n, int(self.config["num_train_timesteps"]))
        self.timesteps = spaced_timesteps(self.config, n, np.int64)
        self.num_inference_steps = n

    def scale_model_input(self, x, t=None):
        return x

    def step(self, eps, t, x, generator=None, eta: float = 0.0, **_):
        """x_t -> x_{t - T/n}; with eta > 0 adds fresh noise drawn from `generator` (rng.Generator)."""
        if self.timesteps is None:
            raise InputError("ddim: call set_timesteps(n) before stepping")
        t = as_index(host(t))
        prev_t = t - int(self.config["num_train_timesteps"]) // self.num_inference_steps
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        b_t = F32(1) - a_t
        x0 = (x - np.sqrt(b_t) * eps) / np.sqrt(a_t)
        if self.config["clip_sample"]:
            r = float(self.config["clip_sample_range"])
            x0 = x0.clip(-r, r)
        b_prev = F32(1) - a_prev
        variance = (b_prev / b_t) * (F32(1) - a_t / a_prev)
        std = F32(eta) * np.sqrt(variance)
        direction = np.sqrt(F32(1) - a_prev - std * std) * eps
        x_prev = np.sqrt(a_prev) * x0 + direction
        if eta > 0:
            if generator is None:
                raise InputError("ddim: eta > 0 needs a generator for the variance noise")
            noise = like(generator.randn(tuple(eps.shape)), x)
            x_prev = x_prev + std * noise
        return x_prev

    def add_noise(self, x0, noise, t):
        return add_noise_ddpm(self.alphas_cumprod, x0, noise, t)
