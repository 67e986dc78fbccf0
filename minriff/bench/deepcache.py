"""`minriff bench unet --cache-branch B [B ...]`: what a DeepCache cached step costs, as a ratio to
a full UNet step measured in the same run (batch 2 = the guidance pair, 64×64 latents, 77 tokens,
full-size random weights unless --weights), rounds interleaved: a plain full step, the full step
that also keeps the cache (`deep_cache_full`), then a cached step of each branch
(`deep_cache_step`). A cached step on the inputs of its full step must give the full step's output
exactly; the `same_as_full` column says whether it did.

From the ratio r of a branch, a run with cache interval N costs about (1 + (N - 1)·r) / N full
steps per step (the `run_cost_interval_3` column for N = 3; the text encoder, VAE and audio aside).
"""
from __future__ import annotations

import numpy as np

from minriff import kernels
from minriff.bench.common import emit, interleaved_medians, peak_rss_mb
from minriff.bench.ops import SETTLE_S
from minriff.errors import InputError


def run(args, model, cfg, source: str, arrays: tuple) -> int:
    F = kernels.ops()
    x, t, ctx = (F.asarray(a) if a.ndim > 1 else a for a in arrays)
    branches = list(dict.fromkeys(args.cache_branch))
    for b in branches:
        if not 0 <= b < model.deep_cache_branches:
            raise InputError(f"--cache-branch {b}: this UNet has branches 0 to {model.deep_cache_branches - 1}")
    plain = F.to_host(model(x, t, ctx))  # also the first call (kernel compilation), untimed
    features, same = {}, {}
    for b in branches:
        eps, features[b] = model.deep_cache_full(x, t, ctx, b)
        cached = F.to_host(model.deep_cache_step(x, t, ctx, b, features[b]))
        same[b] = bool(np.array_equal(F.to_host(eps), plain) and np.array_equal(cached, plain))
    steps = {"full": lambda: model(x, t, ctx),
             f"full + cache (branch {branches[0]})": lambda: model.deep_cache_full(x, t, ctx, branches[0])}
    for b in branches:
        steps[f"cached, branch {b}"] = lambda b=b: model.deep_cache_step(x, t, ctx, b, features[b])
    repeat = max(3, args.repeat or 3)
    medians = interleaved_medians(steps, repeat, SETTLE_S)
    full = medians["full"]
    rows = []
    for name, s in medians.items():
        branch = int(name.rsplit(" ", 1)[1]) if name.startswith("cached") else None
        rows.append(dict(step=name, seconds=s, ratio_to_full=s / full, speedup=full / s,
                         run_cost_interval_3=(1 + 2 * s / full) / 3 if branch is not None else None,
                         same_as_full=same[branch] if branch is not None else None))
    hw = arrays[0].shape[-1]
    extra = dict(weights=source, batch=arrays[0].shape[0], latent=f"{hw}x{hw}", repeat=repeat,
                 peak_rss_mb=round(peak_rss_mb()), branches=model.deep_cache_branches,
                 feature_shapes={b: tuple(features[b].shape) for b in branches})
    emit(rows, args.json, "DeepCache: cached UNet steps vs a full step (median seconds; ratio < 1: cheaper)", extra)
    return 0 if all(same.values()) else 1
