"""What every scheduler shares: the config, the beta/alpha tables, sigma tables and the step index.

The tables follow diffusers bit for bit where it matters (facts read from diffusers 0.42
`scheduling_*.py` and the ATen kernels they call):
- betas come from `torch.linspace(..., dtype=float32)`, which computes `step = (end - start) / (n - 1)`
  in float32 and `start + step * i` for the first half, `end - step * (n - 1 - i)` for the second;
  torch's x86 build fuses each of those into one FMA (we do the same; it matches to the bit).
- `torch.cumprod` on float32 accumulates in float64 and rounds each output to float32.
- Step arithmetic is float32 on float32 0-d tensors; we keep every coefficient an `np.float32`.
"""
from __future__ import annotations

import math

import numpy as np

from minriff.errors import ConfigError, InputError
from minriff.rng import fma32
from minriff.schedulers.config import check_config

F32 = np.float32

# Keys we read, with diffusers' defaults for a scheduler built from a bare scheduler_config.json.
BASE_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                     trained_betas=None, prediction_type="epsilon", steps_offset=0)


def read_config(config: dict, defaults: dict, name: str, predictions: tuple = ("epsilon",)) -> dict:
    """Merge a diffusers scheduler config dict (checked by `config.check_config`) over `defaults`;
    reject a prediction_type this scheduler does not implement (`predictions`)."""
    try:
        check_config(config)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None
    cfg = dict(BASE_DEFAULTS)
    cfg.update(defaults)
    for key, value in config.items():
        if key in cfg and value is not None:
            cfg[key] = value
    if cfg["prediction_type"] not in predictions:
        raise ConfigError(f"{name}: prediction_type {cfg['prediction_type']!r} is not supported "
                          f"(only {', '.join(repr(p) for p in predictions)})")
    return cfg


def torch_linspace_f32(start: float, end: float, n: int) -> np.ndarray:
    """`torch.linspace(start, end, n, dtype=torch.float32)` on x86 CPU, bit for bit."""
    start, end = F32(start), F32(end)
    if n == 1:
        return np.array([start], F32)
    step = (end - start) / F32(n - 1)
    i = np.arange(n)
    first = fma32(np.full(n, step), i.astype(F32), np.full(n, start))
    second = fma32(np.full(n, -step), (n - 1 - i).astype(F32), np.full(n, end))
    return np.where(i < n // 2, first, second).astype(F32)


def alphas_cumprod(cfg: dict) -> np.ndarray:
    """(num_train_timesteps,) float32 cumulative products of 1 - beta, as diffusers computes them."""
    n = int(cfg["num_train_timesteps"])
    if cfg["trained_betas"] is not None:
        betas = np.asarray(cfg["trained_betas"], dtype=F32)
        if betas.shape != (n,):
            raise ConfigError(f"trained_betas has {betas.size} values, expected num_train_timesteps={n}")
    elif cfg["beta_schedule"] == "linear":
        betas = torch_linspace_f32(cfg["beta_start"], cfg["beta_end"], n)
    else:  # scaled_linear
        root = torch_linspace_f32(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n)
        betas = root * root
    alphas = F32(1.0) - betas
    return np.cumprod(alphas.astype(np.float64)).astype(F32)


def check_strength(strength: float) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.floating, np.integer)):
        raise InputError(f"img2img strength must be a number in [0, 1], got {strength!r}")
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"img2img strength must be in [0, 1], got {strength}")
    return strength


def check_steps(n, max_steps: int | None = None) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise InputError(f"number of inference steps must be an integer, got {n!r}")
    if n < 1:
        raise InputError(f"number of inference steps must be at least 1, got {n}")
    if max_steps is not None and n > max_steps:
        raise InputError(f"number of inference steps {n} is larger than num_train_timesteps={max_steps}")
    return int(n)


def spaced_timesteps(cfg: dict, n: int, dtype=np.int64) -> np.ndarray:
    """The `timestep_spacing` rules shared by DDIM, Euler, Euler ancestral and LMS (descending)."""
    T = int(cfg["num_train_timesteps"])
    spacing = cfg["timestep_spacing"]
    if spacing == "linspace":
        if dtype == np.int64:
            return np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
        return np.linspace(0, T - 1, n, dtype=np.float32)[::-1].copy()
    if spacing == "leading":
        ratio = T // n
        ts = (np.arange(0, n) * ratio).round()[::-1].astype(dtype)
        return ts + dtype(cfg["steps_offset"])
    ratio = T / n  # trailing
    return np.round(np.arange(T, 0, -ratio)).astype(dtype) - dtype(1)


def sigma_table(acp: np.ndarray) -> np.ndarray:
    """float32 sqrt((1 - alpha_bar) / alpha_bar) for every training timestep."""
    return np.sqrt((F32(1.0) - acp) / acp)


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """float64 Karras et al. (2022) schedule from sigma_max down to sigma_min."""
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional training timesteps of `sigmas` by linear interpolation in log sigma."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    w = np.clip((lo - log_sigma) / (lo - hi), 0, 1)
    return (1 - w) * low + w * (low + 1)


def as_index(t) -> int:
    """A timestep value (int, float, 0-d array) as a Python int index into the training tables."""
    value = float(np.asarray(t).reshape(-1)[0]) if np.ndim(t) else float(t)
    if value != math.floor(value):
        raise InputError(f"timestep {value} is not an integer training timestep")
    return int(value)


def host(x):
    """Scalar/array on the host (CuPy 0-d arrays -> NumPy)."""
    return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else x


def like(values: np.ndarray, x):
    """`values` (host float32) on the same array module as x (NumPy or CuPy)."""
    if isinstance(x, np.ndarray):
        return values
    return x.__array_namespace__().asarray(values)


class StepIndexMixin:
    """diffusers' step-index bookkeeping for schedulers that walk a sigma table."""

    _step_index: int | None = None
    _begin_index: int | None = None
    order = 1

    @property
    def step_index(self):
        return self._step_index

    @property
    def begin_index(self):
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = int(begin_index)

    def index_for_timestep(self, t) -> int:
        """Position of t in the schedule; the second match if t appears twice (img2img start)."""
        matches = np.flatnonzero(self.timesteps == np.asarray(host(t)).reshape(-1)[0])
        if matches.size == 0:
            raise InputError(f"timestep {t} is not in this scheduler's timesteps")
        return int(matches[1] if matches.size > 1 else matches[0])

    def _init_step_index(self, t) -> None:
        if self._step_index is None:
            self._step_index = self.index_for_timestep(t) if self._begin_index is None else self._begin_index

    def _noise_index(self, t) -> int:
        if self._begin_index is None:
            return self.index_for_timestep(t)
        return self._step_index if self._step_index is not None else self._begin_index

    def _require_timesteps(self):
        if self.timesteps is None:
            raise InputError(f"{type(self).__name__}: call set_timesteps(n) before stepping")
