"""DeepCache (Ma, Fang and Wang, 2023): reuse the UNet's deep features between denoising steps.

A *full* step runs the whole UNet and keeps the feature that enters its shallow branch; each
*cached* step after it runs only that branch (conv_in, the first down layers, the last up layers
and the output head: `UNet2DConditionModel.deep_cache_step`) and takes everything deeper from the
cache. The scheduler is untouched: it receives the approximate noise prediction. The branch
(`UNet2DConditionModel.deep_cache_branches`; 0..11 for SD 1.5, the DeepCache package's
`cache_branch_id`) sets how much a cached step recomputes: 0 the least (fastest, roughest).

Which steps are full, over the run's step positions p = 0 .. n-1:
- "uniform", interval N: p % N == 0 (the package's `DeepCacheSDHelper`);
- "quadratic": ceil(n / N) full steps, denser around 30 % of the run and sparser towards its end
  (the paper's non-uniform schedule, `sample_from_quad_center` in its research pipeline).
Interval 1 makes every step full: the same numbers as without DeepCache.

A step's position is the index of its timestep in the scheduler's list, counted from the run's
first step, as `DeepCacheSDHelper` counts: PNDM's repeated timestep (831, 665, 665, 499 ...) gives
two steps the same position, and an img2img run starts at position 0. With classifier-free
guidance the cache holds the doubled batch [uncond, cond].

This module knows no model: `CachedUNet` calls the two UNet methods by name.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minriff.errors import InputError

SCHEDULES = ("uniform", "quadratic")


@dataclass(frozen=True)
class DeepCache:
    """DeepCache's options: full steps every `interval` steps (or `schedule="quadratic"`), cached
    steps running shallow branch `branch`."""

    interval: int
    branch: int = 0
    schedule: str = "uniform"

    def __post_init__(self):
        for name in ("interval", "branch"):
            v = getattr(self, name)
            low = 1 if name == "interval" else 0
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise InputError(f"DeepCache cache {name} must be an integer >= {low}, got {v!r}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"unknown DeepCache schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")

    def full_steps(self, n: int) -> list[int]:
        """The positions (0 .. n-1) of the full steps in a run of n positions."""
        if self.schedule == "uniform" or self.interval == 1:
            return list(range(0, n, self.interval))
        return quadratic_full_steps(n, self.interval)

    def check_branch(self, unet) -> DeepCache:
        if not self.branch < unet.deep_cache_branches:
            raise InputError(f"DeepCache cache branch must be from 0 to {unet.deep_cache_branches - 1} for this "
                             f"UNet, got {self.branch}")
        return self

    def bind(self, unet, scheduler_timesteps, run_timesteps) -> CachedUNet:
        """The UNet of one run (`run_timesteps`, a part of the scheduler's list) with this cache."""
        return CachedUNet(unet, self.check_branch(unet), step_positions(scheduler_timesteps, run_timesteps))


def options(unet, interval, branch=0, schedule="uniform") -> DeepCache | None:
    """The pipeline's keyword arguments, checked (the branch against `unet`): a DeepCache, or None
    (off) when interval is None."""
    return None if interval is None else DeepCache(interval, branch, schedule).check_branch(unet)


def step_positions(scheduler_timesteps, run_timesteps) -> list[int]:
    """Each run step's position: the first index of its timestep in the scheduler's list, minus the
    first step's. Timesteps missing from the list (a scheduler of one's own) count 0, 1, 2, ..."""
    first: dict[float, int] = {}
    for i, t in enumerate(scheduler_timesteps):
        first.setdefault(float(t), i)
    keys = [float(t) for t in run_timesteps]
    if not keys or any(k not in first for k in keys):
        return list(range(len(keys)))
    return [first[k] - first[keys[0]] for k in keys]


def quadratic_full_steps(n: int, interval: int) -> list[int]:
    """The research pipeline's non-uniform schedule: ceil(n / interval) full steps over positions
    0 .. n-1, with center = 30 % of n (its SD 1.5 script: 15 of 50 steps) and power 1.4, lowered by
    0.02 until the count comes out (the uniform schedule if it never does). n = 50, interval 5
    gives [0, 5, 9, 13, 17, 21, 26, 31, 37, 43]."""
    want = -(-n // interval)
    center = 3 * n // 10
    power = 1.4
    while power > 1:
        # Points spaced evenly between (-center)^(1/p) and (n - center)^(1/p), raised back to p, are
        # dense near 0, i.e. near the center step. The research code takes the first root in Python,
        # where a negative number to a fractional power is complex; numpy carries the complex values
        # through and its integer cast keeps only the real part. The same arithmetic here.
        ends = complex(-center) ** (1 / power), (n - center) ** (1 / power)
        x = np.linspace(ends[0], ends[1], want + 1) ** power
        offsets = np.unique(np.trunc(x.real).astype(np.int64))[1:-1]  # drop the two ends
        steps = [0] + [int(o) + center for o in offsets]
        if len(steps) == want:
            return steps
        power -= 0.02
    return list(range(0, n, interval))


class CachedUNet:
    """The UNet as the sampling loop calls it, `(x, t, context) -> eps`, for one run: call k is
    step k of the run, full or cached by its position."""

    def __init__(self, unet, cache: DeepCache, positions: list[int]):
        self.unet, self.branch, self.positions = unet, cache.branch, positions
        self.full = set(cache.full_steps(max(positions, default=0) + 1))
        self.calls = 0
        self.feature = None  # the deep feature of the last full step, (B, C, h', w') on the backend

    @property
    def full_step_count(self) -> int:
        return sum(p in self.full for p in self.positions)

    def __call__(self, x, t, context):
        position = self.positions[self.calls]
        self.calls += 1
        if position in self.full or self.feature is None:
            eps, self.feature = self.unet.deep_cache_full(x, t, context, self.branch)
            return eps
        return self.unet.deep_cache_step(x, t, context, self.branch, self.feature)
