"""TCD, trajectory consistency distillation's strategic stochastic sampling (Zheng et al. 2024), as
diffusers' TCDScheduler.

For UNets distilled with TCD (TCD-LoRA; LCM-LoRA works too): each step goes from x_t to an
intermediate timestep s = floor((1 - gamma) * prev_t) along the predicted trajectory (DDIM-like, no
boundary scalings), then forward-diffuses from s up to the next timestep prev_t with fresh noise.
gamma (the paper's name; diffusers calls it `eta`) sets the stochasticity: 0 is deterministic (s =
prev_t, no draw at all), 1 jumps to x0 and re-noises fully like LCM. The last step goes to s = 0 and
draws nothing. Like LCM, it needs such a LoRA to give good images in 2-8 steps.

    sched = TCDScheduler(config, gamma=0.3)       # gamma: default 0.3, the TCD authors' examples
    sched.set_timesteps(4)                        # [999, 759, 499, 259], as LCM
    sched.set_timesteps(4, original_inference_steps=50)   # passed explicitly: [999, 749, 499, 249]

Default gamma 0.3, as the TCD README's examples and diffusers' `TCDScheduler.step`; note that
diffusers' StableDiffusionPipeline passes its own `eta=0.0` unless told otherwise, so to reproduce a
diffusers run that did not set `eta`, use gamma=0. `step(..., eta=g)` overrides it for one step.

Timesteps as LCM, with one diffusers difference: an explicit `original_inference_steps` (any value)
makes the candidates 0 .. int(num_train_timesteps * strength) - 1 instead of LCM's k*j - 1.
s is computed in float32, as torch does (float64 gives a different floor for a few pairs, e.g. gamma
0.3 and prev_t 90: 63 in float32, 62 in float64).
"""
from __future__ import annotations

import numpy as np

from minriff.errors import InputError
from minriff.schedulers.common import F32
from minriff.schedulers.lcm import ConsistencySchedulerBase, check_original_steps

DEFAULT_GAMMA = 0.3


def check_gamma(gamma) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(gamma) <= 1.0:
        raise InputError(f"tcd: gamma (eta) must be a number in [0, 1], got {gamma!r}")
    return float(gamma)


def intermediate_timestep(gamma: float, prev_t):
    """s = floor((1 - gamma) * prev_t) with the product rounded to float32 (torch's int64 tensor times
    a Python float); prev_t an integer or an integer array."""
    product = F32(1.0 - float(gamma)) * np.asarray(prev_t).astype(F32)
    return np.floor(product).astype(np.int64)


class TCDScheduler(ConsistencySchedulerBase):
    name = "tcd"

    def __init__(self, config: dict, gamma: float = DEFAULT_GAMMA):
        super().__init__(config)
        self.gamma = check_gamma(gamma)

    def _origin_timesteps(self, original_inference_steps, strength: float) -> tuple[np.ndarray, int]:
        if original_inference_steps is None:
            return super()._origin_timesteps(None, strength)
        orig = check_original_steps(original_inference_steps, self.config)
        return np.arange(0, int(int(self.config["num_train_timesteps"]) * strength), dtype=np.int64), orig

    def step(self, model_output, timestep, sample, generator=None, eta: float | None = None, **_):
        """x_t -> x at the next timestep through s = floor((1 - gamma) prev_t). Draws noise from
        `generator` (shape of model_output) when gamma > 0, except on the last step. eta: this step's
        gamma (default: the scheduler's). `self.pred_noised_sample` keeps x_s."""
        gamma = self.gamma if eta is None else check_gamma(eta)
        t, prev_t = self._begin_step(timestep)
        last = prev_t is None
        prev_t = 0 if last else prev_t
        s = int(intermediate_timestep(gamma, prev_t))
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t]
        a_s = self.alphas_cumprod[s]
        x0, eps = self._predict(model_output, sample, a_t)
        x_s = np.sqrt(a_s) * x0 + np.sqrt(F32(1) - a_s) * eps
        self.pred_noised_sample = x_s
        if gamma > 0 and not last:
            noise = self._noise(generator, model_output, sample)
            ratio = a_prev / a_s
            x_prev = np.sqrt(ratio) * x_s + np.sqrt(F32(1) - ratio) * noise
        else:
            x_prev = x_s
        self._step_index += 1
        return x_prev
