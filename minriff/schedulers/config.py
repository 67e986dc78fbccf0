"""The one check of a diffusers `scheduler_config.json` dict (`check_config`), run when a weights
file is converted, when it is loaded, and when a scheduler is built from it.

It checks every key a minriff scheduler reads: types, finite numbers in sane ranges, and enum
values minriff knows (a value diffusers knows but minriff cannot run, such as
`beta_schedule="squaredcos_cap_v2"`, is refused here too: better at convert time than at the
first generation). Keys no minriff scheduler reads are ignored; `null` means "the default", as in
diffusers. Which scheduler supports which option (e.g. PNDM needs skip_prk_steps) is left to the
scheduler classes.
"""
from __future__ import annotations

import math

import numpy as np

from minriff.errors import ConfigError

MAX_TRAIN_TIMESTEPS = 100_000  # SD uses 1000; the tables are this long
MIN_ALPHA_CUMPROD = 1e-10  # the last timestep's signal level (SD v1: 0.0047); below it sigmas run to inf in float32
BOOLS = ("set_alpha_to_one", "skip_prk_steps", "clip_sample", "thresholding", "lower_order_final", "euler_at_final",
         "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "rescale_betas_zero_snr", "use_lu_lambdas")
ENUMS = {
    "beta_schedule": ("linear", "scaled_linear"),
    "prediction_type": ("epsilon", "v_prediction", "sample"),  # which scheduler runs which: read_config
    "timestep_spacing": ("linspace", "leading", "trailing"),
    "algorithm_type": ("dpmsolver++", "dpmsolver", "sde-dpmsolver", "sde-dpmsolver++"),
    "solver_type": ("midpoint", "heun"),
    "final_sigmas_type": ("zero", "sigma_min"),
    "interpolation_type": ("linear", "log_linear"),
}
# key -> (integer?, low, high, low bound excluded?)
NUMBERS = {
    "num_train_timesteps": (True, 2, MAX_TRAIN_TIMESTEPS, False),
    "steps_offset": (True, 0, 1, False),  # diffusers: 0, or 1 for SD; more pushes "leading" timesteps past the end
    "solver_order": (True, 1, 3, False),
    "beta_start": (False, 0.0, 0.9999, True),
    "beta_end": (False, 0.0, 0.9999, True),
    "clip_sample_range": (False, 0.0, 1e6, True),
    "sample_max_value": (False, 0.0, 1e6, True),
    "dynamic_thresholding_ratio": (False, 0.0, 1.0, True),
    "sigma_min": (False, 0.0, 1e6, True),
    "sigma_max": (False, 0.0, 1e6, True),
    "original_inference_steps": (True, 1, MAX_TRAIN_TIMESTEPS, False),  # LCM / TCD
    "timestep_scaling": (False, 0.0, 1e6, True),  # LCM
}


def check_config(config) -> dict:
    """`config` unchanged if a minriff scheduler can be built from it, else a ConfigError naming the key."""
    if not isinstance(config, dict):
        raise ConfigError(f"scheduler config must be a dict, got {type(config).__name__}")
    for key, value in config.items():
        if value is None:
            continue
        if key in BOOLS and not isinstance(value, bool):
            raise ConfigError(f"scheduler config: {key} must be true or false, got {value!r}")
        if key == "beta_schedule" and config.get("trained_betas") is not None:
            continue  # diffusers ignores the schedule when the betas are given
        if key in ENUMS and value not in ENUMS[key]:
            known = ", ".join(ENUMS[key])
            raise ConfigError(f"scheduler config: {key} {value!r} is not supported (minriff knows: {known})")
        if key in NUMBERS:
            _check_number(key, value, *NUMBERS[key])
    if config.get("lambda_min_clipped") is not None:
        v = config["lambda_min_clipped"]  # diffusers' default is -inf
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise ConfigError(f"scheduler config: lambda_min_clipped must be a number, got {v!r}")
    if config.get("_class_name") is not None and not isinstance(config["_class_name"], str):
        raise ConfigError(f"scheduler config: _class_name must be a string, got {config['_class_name']!r}")
    n = config.get("num_train_timesteps") or 1000
    _check_betas(config.get("trained_betas"), n)
    _check_signal_left(config, n)
    return config


def _check_signal_left(config: dict, n: int) -> None:
    """The noise schedule must keep some signal at its last timestep: alpha_cumprod = prod(1 - beta)
    above MIN_ALPHA_CUMPROD (computed in float64 like the tables' cumprod)."""
    if config.get("trained_betas") is not None:
        betas = np.asarray(config["trained_betas"], dtype=np.float64)
    else:
        start, end = config.get("beta_start") or 0.0001, config.get("beta_end") or 0.02
        if (config.get("beta_schedule") or "linear") == "scaled_linear":
            betas = np.linspace(start ** 0.5, end ** 0.5, n) ** 2
        else:
            betas = np.linspace(start, end, n)
    left = float(np.exp(np.sum(np.log1p(-betas))))
    if not left >= MIN_ALPHA_CUMPROD:
        raise ConfigError(f"scheduler config: beta_start/beta_end/num_train_timesteps/trained_betas leave "
                          f"alpha_cumprod {left:.3g} at the last timestep (below {MIN_ALPHA_CUMPROD:g}: pure noise "
                          "and infinite sigmas)")


def _check_number(key: str, v, integer: bool, lo, hi, open_low: bool) -> None:
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise ConfigError(f"scheduler config: {key} must be {'an integer' if integer else 'a number'}, got {v!r}")
    if not math.isfinite(v) or v < lo or v > hi or (open_low and v == lo):
        interval = f"{'(' if open_low else '['}{lo}, {hi}]"
        raise ConfigError(f"scheduler config: {key} = {v!r} is outside {interval}")


def _check_betas(betas, n: int) -> None:
    if betas is None:
        return
    if not isinstance(betas, list) or len(betas) != n:
        size = len(betas) if isinstance(betas, list) else type(betas).__name__
        raise ConfigError(f"scheduler config: trained_betas must be a list of num_train_timesteps={n} numbers, "
                          f"got {size}")
    for i, b in enumerate(betas):
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 < b < 1.0:
            raise ConfigError(f"scheduler config: trained_betas[{i}] = {b!r} is not a number in (0, 1)")
