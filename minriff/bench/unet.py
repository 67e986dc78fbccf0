"""`minriff bench unet`: one UNet step (batch 2 = classifier-free guidance pair, 64×64 latents,
77 text tokens) with full-size weights, median of >= 3 runs; the same step in diffusers/torch on
the same weights (shared memory, same thread count) when torch is installed, as a ratio
torch_time / minriff_time (> 1: minriff is faster); peak RSS after each part.

Random weights come from `minriff.weights.init_random`: fan-in scaling so activations stay O(1)
through the network, values tiled from one random pool (generating 860 M normals would dominate
the run).
"""
from __future__ import annotations

import os
import time

import numpy as np

from .. import configs, kernels
from ..unet import UNet2DConditionModel
from ..weights import init_random
from .common import emit, peak_rss_mb, timeit, torch_or_none


def _minriff_unet(args):
    if args.weights:
        from .. import weights, nn
        wf = weights.open(args.weights)
        model = UNet2DConditionModel(wf.config.unet)
        return nn.load(model, wf.component("unet"), what="UNet"), wf.config.unet, f"file {args.weights}"
    cfg = configs.SD15.unet
    return init_random(UNet2DConditionModel(cfg)), cfg, "random sd15 shapes"


def _torch_unet(torch, model, cfg):
    """diffusers' UNet sharing minriff's parameter arrays (no copy; built on the meta device)."""
    from diffusers import UNet2DConditionModel as TorchUNet

    kw = {k: v for k, v in cfg.to_dict().items() if k not in ("num_attention_heads",) or v is not None}
    with torch.device("meta"):
        tm = TorchUNet(**kw)
    state = {k: torch.from_numpy(kernels.ops().to_host(v)) for k, v in model.named_parameters()}
    tm.load_state_dict(state, strict=True, assign=True)
    return tm.eval()


def run(args) -> int:
    quick = args.quick
    repeat = max(3, args.repeat or 3)
    kernels.backend(args.backend)
    F = kernels.ops()
    t0 = time.perf_counter()
    model, cfg, source = _minriff_unet(args)
    build_s = time.perf_counter() - t0
    hw = 32 if quick else 64
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, cfg.in_channels, hw, hw), dtype=np.float32)
    t = np.array([981.0, 981.0], dtype=np.float32)
    ctx = rng.standard_normal((2, 77, cfg.cross_attention_dim), dtype=np.float32)
    xd, ctxd = F.asarray(x), F.asarray(ctx)

    out = None

    def step():
        nonlocal out
        out = model(xd, t, ctxd)

    t0 = time.perf_counter()
    step()  # first call: kernel compilation / caches (reported, not in the median)
    first_s = time.perf_counter() - t0
    minriff_s = timeit(step, repeat=repeat, warmup=0)
    finite = bool(np.isfinite(F.to_host(out)).all())
    rss_minriff = peak_rss_mb()

    try:
        import numba
        threads = numba.get_num_threads()
    except ImportError:
        threads = os.cpu_count() or 1
    row = dict(backend=args.backend, batch=2, latent=f"{hw}x{hw}", minriff_s=minriff_s, first_call_s=first_s,
               torch_s=None, ratio_torch_over_minriff=None, max_rel_diff_vs_torch=None)
    torch = torch_or_none()
    if torch is not None:
        try:
            torch.set_num_threads(threads)
            tm = _torch_unet(torch, model, cfg)
            tx, tt, tc = torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(ctx)
            ref = None

            def torch_step():
                nonlocal ref
                with torch.inference_mode():
                    ref = tm(tx, tt, tc).sample

            torch_step()
            row["torch_s"] = timeit(torch_step, repeat=repeat, warmup=0)
            row["ratio_torch_over_minriff"] = row["torch_s"] / minriff_s
            got = F.to_host(out)
            row["max_rel_diff_vs_torch"] = float(np.abs(got - ref.numpy()).max() / np.abs(ref.numpy()).max())
        except ImportError as e:
            row["torch_s"] = f"unavailable: {e}"
    extra = dict(weights=source, build_s=round(build_s, 1), repeat=repeat, threads=threads, finite=finite,
                 peak_rss_mb_minriff=round(rss_minriff), peak_rss_mb_total=round(peak_rss_mb()),
                 parameters_m=round(model.num_parameters() / 1e6, 1))
    emit([row], args.json, "UNet step (median seconds; ratio > 1 means minriff is faster)", extra)
    return 0 if finite else 1
