"""PNDM in its PLMS form (`skip_prk_steps=True`), Riffusion's scheduler (reference/riffusion.md §2.6).

For n steps the schedule has n+1 entries (n >= 2): the second-highest training step appears twice,
because the first PLMS step is done twice — once as a plain Euler-like step that stores the sample,
once re-done from the stored sample with the average of the two noise predictions. The warm-up
is driven by a call counter, not by the timestep values, so a truncated schedule (img2img) still
treats call #2 as the redo: that is the original's behaviour and we keep it.
"""
from __future__ import annotations

import numpy as np

from minriff.errors import ConfigError, InputError
from minriff.schedulers.common import F32, alphas_cumprod, as_index, check_steps, host, read_config

DEFAULTS = dict(skip_prk_steps=False, set_alpha_to_one=False, timestep_spacing="leading")


class PNDMScheduler:
    order = 1
    init_noise_sigma = 1.0

    def __init__(self, config: dict):
        self.config = read_config(config, DEFAULTS, "pndm")
        if not self.config["skip_prk_steps"]:
            # Riffusion's and SD 1.x's configs set it; the Runge-Kutta warm-up is not implemented.
            raise ConfigError("pndm: only skip_prk_steps=true (PLMS) is supported")
        self.alphas_cumprod = alphas_cumprod(self.config)
        self.final_alpha_cumprod = F32(1.0) if self.config["set_alpha_to_one"] else self.alphas_cumprod[0]
        self.num_inference_steps = None
        self.timesteps = None

    def set_timesteps(self, n: int) -> None:
        T = int(self.config["num_train_timesteps"])
        n = check_steps(n, T)
        spacing = self.config["timestep_spacing"]
        if spacing == "linspace":
            base = np.linspace(0, T - 1, n).round().astype(np.int64)
        elif spacing == "leading":
            base = (np.arange(0, n) * (T // n)).round().astype(np.int64) + int(self.config["steps_offset"])
        else:
            base = np.round(np.arange(T, 0, -T / n))[::-1].astype(np.int64) - 1
        # (n steps ascending) -> repeat the second-to-last, then descending: n+1 entries (1 if n == 1)
        self.timesteps = np.concatenate([base[:-1], base[-2:-1], base[-1:]])[::-1].copy()
        self.num_inference_steps = n
        self.counter = 0
        self.ets: list = []
        self.cur_sample = None

    def scale_model_input(self, x, t=None):
        return x

    def step(self, eps, t, x, generator=None, **_):
        """One PLMS step: x at timestep t and the model's noise prediction -> x at the next timestep."""
        if self.timesteps is None:
            raise InputError("pndm: call set_timesteps(n) before stepping")
        ratio = int(self.config["num_train_timesteps"]) // self.num_inference_steps
        t = as_index(host(t))
        prev_t = t - ratio
        if self.counter != 1:
            self.ets = self.ets[-3:]
            self.ets.append(eps)
        else:  # the redo of the first interval
            prev_t, t = t, t + ratio
        e = self.ets
        if len(e) == 1 and self.counter == 0:
            eps_mix = eps
            self.cur_sample = x
        elif len(e) == 1 and self.counter == 1:
            eps_mix = (eps + e[-1]) / F32(2)
            x, self.cur_sample = self.cur_sample, None
        elif len(e) == 2:
            eps_mix = (F32(3) * e[-1] - e[-2]) / F32(2)
        elif len(e) == 3:
            eps_mix = (F32(23) * e[-1] - F32(16) * e[-2] + F32(5) * e[-3]) / F32(12)
        else:
            eps_mix = F32(1 / 24) * (F32(55) * e[-1] - F32(59) * e[-2] + F32(37) * e[-3] - F32(9) * e[-4])
        x_prev = self._prev_sample(x, t, prev_t, eps_mix)
        self.counter += 1
        return x_prev

    def _prev_sample(self, x, t: int, prev_t: int, eps):
        """Formula (9) of the PNDM paper, float32 scalars in diffusers' operation order."""
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        b_t, b_prev = F32(1) - a_t, F32(1) - a_prev
        x_coeff = np.sqrt(a_prev / a_t)
        denom = a_t * np.sqrt(b_prev) + np.sqrt(a_t * b_t * a_prev)
        return x_coeff * x - (a_prev - a_t) * eps / denom

    def add_noise(self, x0, noise, t):
        return add_noise_ddpm(self.alphas_cumprod, x0, noise, t)


def add_noise_ddpm(acp: np.ndarray, x0, noise, t):
    """sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise; t a scalar or one per batch item."""
    idx = np.asarray(host(t)).astype(np.int64).reshape(-1)
    a = acp[idx]
    s_a, s_1ma = np.sqrt(a), np.sqrt(F32(1) - a)
    if idx.size == 1:
        return s_a[0] * x0 + s_1ma[0] * noise
    shape = (-1,) + (1,) * (x0.ndim - 1)
    if hasattr(x0, "__array_namespace__") and not isinstance(x0, np.ndarray):
        xp = x0.__array_namespace__()
        s_a, s_1ma = xp.asarray(s_a), xp.asarray(s_1ma)
    return s_a.reshape(shape) * x0 + s_1ma.reshape(shape) * noise
