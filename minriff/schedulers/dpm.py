"""DPM-Solver++ multistep (Lu et al. 2022), order 2 ("2M"), optionally on Karras sigmas.

The data-prediction form: x0 = (x - sigma_t eps) / alpha_t with alpha_t = 1/sqrt(sigma^2+1),
sigma_t = sigma alpha_t, lambda = log alpha_t - log sigma_t; a first-order step for the first call
and (lower_order_final) the last steps of short schedules, else the 2-step midpoint (or heun) update.
"""
from __future__ import annotations

import math

import numpy as np

from minriff.errors import ConfigError
from minriff.schedulers.common import (
    F32,
    StepIndexMixin,
    alphas_cumprod,
    check_steps,
    host,
    karras_sigmas,
    like,
    read_config,
    sigma_table,
    sigma_to_t,
)

DEFAULTS = dict(solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True,
                euler_at_final=False, use_karras_sigmas=False, final_sigmas_type="zero",
                lambda_min_clipped=-math.inf, timestep_spacing="linspace", thresholding=False,
                variance_type=None)


def _log32(v) -> F32:
    # log of a float32 scalar, correctly rounded (torch's scalar log agrees except in rare last bits)
    v = float(v)
    return F32(math.log(v)) if v > 0 else F32(-math.inf)


def _exp32(v) -> F32:
    return F32(math.exp(float(v)))


def _alpha_sigma(sigma: F32) -> tuple[F32, F32]:
    alpha = F32(1) / np.sqrt(sigma * sigma + F32(1))
    return alpha, sigma * alpha


class DPMSolverMultistepScheduler(StepIndexMixin):
    init_noise_sigma = 1.0

    def __init__(self, config: dict):
        cfg = self.config = read_config(config, DEFAULTS, "dpmpp2m")
        if cfg["algorithm_type"] != "dpmsolver++":
            raise ConfigError(f"dpmpp2m: algorithm_type {cfg['algorithm_type']!r} is not supported "
                              "(only 'dpmsolver++')")
        if cfg["solver_order"] not in (1, 2):
            raise ConfigError(f"dpmpp2m: solver_order must be 1 or 2, got {cfg['solver_order']!r}")
        if cfg["solver_type"] not in ("midpoint", "heun"):
            raise ConfigError(f"dpmpp2m: solver_type {cfg['solver_type']!r} is not one of midpoint, heun")
        if cfg["final_sigmas_type"] not in ("zero", "sigma_min"):
            raise ConfigError(f"dpmpp2m: final_sigmas_type {cfg['final_sigmas_type']!r} is not one of "
                              "zero, sigma_min")
        if cfg["lambda_min_clipped"] != -math.inf or cfg["thresholding"] or cfg["variance_type"]:
            raise ConfigError("dpmpp2m: lambda_min_clipped, thresholding and variance_type are not supported")
        self.alphas_cumprod = alphas_cumprod(cfg)
        self.timesteps = None
        self.num_inference_steps = None

    def set_timesteps(self, n: int) -> None:
        cfg = self.config
        T = int(cfg["num_train_timesteps"])
        n = check_steps(n, T)
        spacing = cfg["timestep_spacing"]
        if spacing == "linspace":
            timesteps = np.linspace(0, T - 1, n + 1).round()[::-1][:-1].astype(np.int64)
        elif spacing == "leading":
            ratio = T // (n + 1)
            timesteps = (np.arange(0, n + 1) * ratio).round()[::-1][:-1].astype(np.int64)
            timesteps = timesteps + int(cfg["steps_offset"])
        else:
            timesteps = np.arange(T, 0, -T / n).round().astype(np.int64) - 1
        table = sigma_table(self.alphas_cumprod)
        if cfg["use_karras_sigmas"]:
            sigmas = karras_sigmas(float(table[0]), float(table[-1]), n)
            timesteps = sigma_to_t(sigmas, np.log(table)).round().astype(np.int64)
        else:
            sigmas = np.interp(timesteps, np.arange(len(table)), table)
        if cfg["final_sigmas_type"] == "sigma_min":
            a0 = self.alphas_cumprod[0]
            last = np.sqrt((F32(1) - a0) / a0)
        else:
            last = 0.0
        self.sigmas = np.concatenate([sigmas, [last]]).astype(F32)
        self.timesteps = np.ascontiguousarray(timesteps)
        self.num_inference_steps = len(timesteps)
        self.model_outputs = [None] * cfg["solver_order"]
        self.lower_order_nums = 0
        self._step_index = None
        self._begin_index = None

    def index_for_timestep(self, t) -> int:
        matches = np.flatnonzero(self.timesteps == np.asarray(host(t)).reshape(-1)[0])
        if matches.size == 0:
            return len(self.timesteps) - 1
        return int(matches[1] if matches.size > 1 else matches[0])

    def scale_model_input(self, x, t=None):
        return x

    def _lambda(self, i: int):
        alpha, sigma = _alpha_sigma(self.sigmas[i])
        with np.errstate(divide="ignore"):
            return alpha, sigma, _log32(alpha) - _log32(sigma)

    def step(self, eps, t, x, generator=None, **_):
        self._require_timesteps()
        self._init_step_index(t)
        cfg, i, n = self.config, self._step_index, len(self.timesteps)
        short = cfg["lower_order_final"] and n < 15
        final_first = i == n - 1 and (cfg["euler_at_final"] or short or cfg["final_sigmas_type"] == "zero")
        alpha_s, sigma_s, lam_s = self._lambda(i)
        x0 = (x - sigma_s * eps) / alpha_s
        self.model_outputs = self.model_outputs[1:] + [x0]
        alpha_t, sigma_t, lam_t = self._lambda(i + 1)
        h = lam_t - lam_s
        phi = alpha_t * (_exp32(-h) - F32(1))  # alpha_t (e^{-h} - 1)
        if cfg["solver_order"] == 1 or self.lower_order_nums < 1 or final_first:
            x_prev = (sigma_t / sigma_s) * x - phi * x0
        else:
            _, _, lam_s1 = self._lambda(i - 1)
            r0 = (lam_s - lam_s1) / h
            m0, m1 = self.model_outputs[-1], self.model_outputs[-2]
            d1 = (F32(1) / r0) * (m0 - m1)
            x_prev = (sigma_t / sigma_s) * x - phi * m0
            if cfg["solver_type"] == "midpoint":
                x_prev = x_prev - (F32(0.5) * phi) * d1
            else:
                x_prev = x_prev + (alpha_t * ((_exp32(-h) - F32(1)) / h + F32(1))) * d1
        self.lower_order_nums = min(self.lower_order_nums + 1, cfg["solver_order"])
        self._step_index += 1
        return x_prev

    def add_noise(self, x0, noise, t):
        self._require_timesteps()
        ts = np.asarray(host(t)).reshape(-1)
        sig = np.array([self.sigmas[self._noise_index(v)] for v in ts], F32)
        alpha, sigma = _alpha_sigma(sig)
        if sig.size == 1:
            return alpha[0] * x0 + sigma[0] * noise
        shape = (-1,) + (1,) * (x0.ndim - 1)
        return like(alpha.reshape(shape), x0) * x0 + like(sigma.reshape(shape), x0) * noise
