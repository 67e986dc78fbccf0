"""`minriff bench unet`: one UNet step (batch 2 = classifier-free guidance pair, 64×64 latents,
77 text tokens) with full-size weights, median of >= 3 runs; `minriff bench vae`: one VAE decode
of a 64×64 latent (a 512×512 spectrogram); `bench vae --decoder taesd`: the same with TAESD
(diffusers' AutoencoderTiny as the baseline), and minriff's full VAE in the same rounds. Each
also runs in diffusers/torch on the same weights and inputs (in a child process, same thread
count, rounds interleaved with minriff's) when torch is installed, as a ratio torch_time /
minriff_time (> 1: minriff is faster), and the largest difference between the two outputs; peak
RSS of this process.
`bench unet --cache-branch B [B ...]`: DeepCache's cached steps against a full step instead
(bench/deepcache.py); `bench unet --controlnet [FILE]`: a ControlNet-guided step against a plain
one (bench/controlnet.py).

`--loop`: a step as the quality preset's sampling loop runs it: the guided pair's latent halves
equal (the UNet then runs its layers before the first cross-attention once, models/unet.py) and
the Winograd weight transforms kept by `kernels.weight_cache` from the first (untimed) call, as
the loop keeps them from its first step; diffusers gets the same inputs.

`--weights-dtype`: the weights held in fp16 (the default: half the memory, widened where the ops
use them) or fp32; `both` builds the fp16 model and its exact fp32 widening, times them in
interleaved rounds and reports fp32_s / fp16_s (> 1: the fp16-held weights are faster) and their
largest output difference (without the torch child: three full-size models at once were too
much for a shared machine). torch runs on fp32 weights of the same values.

Random weights come from `minriff.model_init.init_random`: fan-in scaling so activations stay O(1)
through the network, values tiled from one random pool (generating 860 M normals would dominate
the run).
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

from minriff import configs, kernels
from minriff.bench.common import ChildTimer, emit, peak_rss_mb, torch_or_none
from minriff.bench.ops import SETTLE_S
from minriff.configs import TAESDConfig
from minriff.errors import InputError
from minriff.models.init import init_random, random_taesd
from minriff.models.unet import UNet2DConditionModel
from minriff.models.vae import AutoencoderKL
from minriff.pipeline import default_kernel_cache_bytes
from minriff.weights.taesd import load_taesd


def _minriff_model(kind: str, weights_path, dtype=np.float16):
    """-> (model, config, source) for kind "unet", "vae" or "taesd": from a weights file, or random;
    UNet and VAE parameters held as `dtype` (TAESD's as its file or init gives them)."""
    if kind == "taesd":
        if weights_path:
            model = load_taesd(weights_path)
            return model, model.config, f"file {weights_path}"
        return random_taesd("taesd"), TAESDConfig(), "random madebyollin/taesd shapes"
    model_cls, cfg_of = (UNet2DConditionModel, lambda c: c.unet) if kind == "unet" else (AutoencoderKL, lambda c: c.vae)
    if weights_path:
        from minriff import weights
        from minriff.models import nn
        wf = weights.WeightsFile(weights_path)
        model = model_cls(cfg_of(wf.config))
        model = nn.load(model, wf.component(kind).cast(dtype), what=kind.upper(), dtype=dtype)
        return model, cfg_of(wf.config), f"file {weights_path}"
    cfg = cfg_of(configs.SD15)
    return init_random(model_cls(cfg), dtype=dtype), cfg, "random sd15 shapes"


def _widened(model):
    """`model` with every parameter as float32 (a float16 model's exact values), in place."""
    return model.apply_to_parameters(lambda a: np.asarray(a, dtype=np.float32))


def _inputs(kind: str, cfg, quick: bool, equal_halves: bool = False) -> tuple:
    """The same arrays in both processes. unet: x (2, C, hw, hw), t (2,), context (2, 77, cross_dim),
    with `equal_halves` x[1] = x[0] (classifier-free guidance's pair); vae: latents (1, C, hw, hw)."""
    hw = 32 if quick else 64
    rng = np.random.default_rng(1)
    if kind in ("vae", "taesd"):
        return (rng.standard_normal((1, cfg.latent_channels, hw, hw), dtype=np.float32),)
    x = rng.standard_normal((2, cfg.in_channels, hw, hw), dtype=np.float32)
    if equal_halves:
        x[1] = x[0]
    t = np.array([981.0, 981.0], dtype=np.float32)
    ctx = rng.standard_normal((2, 77, cfg.cross_attention_dim), dtype=np.float32)
    return x, t, ctx


def _torch_model(kind: str, torch, model, cfg):
    """diffusers' UNet or VAE sharing minriff's parameter arrays (no copy; built on the meta device)."""
    if kind == "unet":
        from diffusers import UNet2DConditionModel as TorchModel
    elif kind == "taesd":
        from diffusers import AutoencoderTiny as TorchModel
    else:
        from diffusers import AutoencoderKL as TorchModel

    kw = {k: v for k, v in cfg.to_dict().items() if k not in ("num_attention_heads",) or v is not None}
    with torch.device("meta"):
        tm = TorchModel(**kw)
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in model.named_parameters()}
    tm.load_state_dict(state, strict=True, assign=True)
    return tm.eval()


def _call(kind: str, model, arrays):
    """One step: the UNet's noise prediction, or the VAE's / TAESD's decoded image (either library)."""
    return model(*arrays) if kind == "unet" else model.decode(*arrays)


def _torch_step(kind: str, weights_path, quick: bool, dtype="float16", equal_halves=False, threads=None) -> dict:
    """ChildTimer factory: diffusers' model on the same weights (rebuilt in the child: the same
    file, or init_random's deterministic values, rounded to `dtype` as in the parent; torch computes
    on them widened to float32) and the same inputs."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    model, cfg, _ = _minriff_model(kind, weights_path, np.dtype(dtype))
    tm = _torch_model(kind, torch, model, cfg)
    arrays = tuple(torch.from_numpy(a) for a in _inputs(kind, cfg, quick, equal_halves))
    out = {}

    def step():
        with torch.inference_mode():
            out["sample"] = _call(kind, tm, arrays).sample

    return {"step": step, "output": lambda: out["sample"].numpy()}


def run(args) -> int:
    quick = args.quick
    repeat = max(3, args.repeat or 3)
    kernels.backend(args.backend)
    F = kernels.ops()
    t0 = time.perf_counter()
    kind = "taesd" if args.target == "vae" and getattr(args, "decoder", "full") == "taesd" else args.target
    mode = getattr(args, "weights_dtype", None) or "fp16"
    dtype = np.float32 if mode == "fp32" else np.float16
    model, cfg, source = _minriff_model(kind, args.weights, dtype)
    if args.backend == "cuda":  # float32 copies on the device, as Riffusion makes them
        model.apply_to_parameters(lambda a: F.asarray(a, dtype=np.float32))
    build_s = time.perf_counter() - t0
    loop = bool(getattr(args, "loop", False))
    arrays = _inputs(kind, cfg, quick, loop)
    if getattr(args, "cache_branch", None) is not None:
        if kind != "unet":
            raise InputError("--cache-branch is for `minriff bench unet`")
        from minriff.bench import deepcache

        return deepcache.run(args, model, cfg, source, arrays)
    if getattr(args, "controlnet", None) is not None:
        if kind != "unet":
            raise InputError("--controlnet is for `minriff bench unet`")
        from minriff.bench import controlnet

        return controlnet.run(args, model, cfg, source, arrays, dtype)
    # --loop: a step as a sampling loop runs it, after its first step filled the weight cache
    cache = kernels.weight_cache(default_kernel_cache_bytes() if loop else 0, args.backend)
    with cache:
        hw = arrays[0].shape[-1]
        on_device = tuple(F.asarray(a) if a.ndim > 1 else a for a in arrays)
        wide = None
        if mode == "both":  # the same values held in float32 (a second model)
            wide = _widened(_minriff_model(kind, args.weights, dtype)[0])
            if args.backend == "cuda":
                wide.apply_to_parameters(lambda a: F.asarray(a, dtype=np.float32))

        out = wide_out = None

        def step():
            nonlocal out
            out = _call(kind, model, on_device)

        def wide_step():
            nonlocal wide_out
            wide_out = _call(kind, wide, on_device)

        t0 = time.perf_counter()
        step()  # first call: kernel compilation / caches (reported, not in the median)
        first_s = time.perf_counter() - t0
        if wide is not None:
            wide_step()
        # TAESD: the full VAE's decode of the same latents, timed in the same rounds (random sd15 weights)
        full_vae = _minriff_model("vae", None, dtype)[0] if kind == "taesd" else None
        if full_vae is not None:
            _call("vae", full_vae, on_device)
        try:
            import numba
            threads = numba.get_num_threads()
        except ImportError:
            threads = os.cpu_count() or 1
        torch = None if getattr(args, "no_torch", False) else torch_or_none()
        child = None
        row = dict(backend=args.backend, batch=arrays[0].shape[0], latent=f"{hw}x{hw}", minriff_s=None,
                   first_call_s=first_s, torch_s=None, ratio_torch_over_minriff=None, max_rel_diff_vs_torch=None)
        row = dict(weights_dtype=mode, **row)
        if wide is not None:
            row.update(fp32_s=None, ratio_fp32_over_fp16=None, max_rel_diff_fp16_vs_fp32=None)
        if torch is not None and wide is None:  # both: two models here already; no third in a child
            try:
                child = ChildTimer(_torch_step, (kind, args.weights, quick, np.dtype(dtype).name, loop), threads)
            except RuntimeError as e:
                row["torch_s"] = f"unavailable: {e}"
        # interleaved rounds (minriff step, [fp32-held step,] [full VAE,] torch step): load hits all alike
        ours, wides, theirs, full = [], [], [], []
        try:
            for _ in range(repeat):
                time.sleep(SETTLE_S)
                t0 = time.perf_counter()
                step()
                ours.append(time.perf_counter() - t0)
                if wide is not None:
                    time.sleep(SETTLE_S)
                    t0 = time.perf_counter()
                    wide_step()
                    wides.append(time.perf_counter() - t0)
                if full_vae is not None:
                    time.sleep(SETTLE_S)
                    t0 = time.perf_counter()
                    _call("vae", full_vae, on_device)
                    full.append(time.perf_counter() - t0)
                if child is not None:
                    time.sleep(SETTLE_S)
                    theirs.append(child.time("step"))
            if child is not None:
                ref = child.value("output")
                got = F.to_host(out)
                row["max_rel_diff_vs_torch"] = float(np.abs(got - ref).max() / np.abs(ref).max())
        finally:
            if child is not None:
                child.close()
        row["minriff_s"] = statistics.median(ours)
        if wides:
            got, ref = F.to_host(out), F.to_host(wide_out)
            row["fp32_s"] = statistics.median(wides)
            row["ratio_fp32_over_fp16"] = row["fp32_s"] / row["minriff_s"]
            row["max_rel_diff_fp16_vs_fp32"] = float(np.abs(got - ref).max() / np.abs(ref).max())
        if theirs:
            row["torch_s"] = statistics.median(theirs)
            row["ratio_torch_over_minriff"] = row["torch_s"] / row["minriff_s"]
        if full:
            row["full_vae_s"] = statistics.median(full)
            row["full_vae_over_taesd"] = row["full_vae_s"] / row["minriff_s"]
        finite = bool(np.isfinite(F.to_host(out)).all())
        if loop:
            from minriff.kernels.cpu import weightcache

            extra_loop = dict(loop="equal halves (CFG), weight transforms kept: "
                                   f"{weightcache.used_bytes() / 2**30:.2f} GiB")
        else:
            extra_loop = {}
        extra = dict(weights=source, build_s=round(build_s, 1), repeat=repeat, threads=threads, finite=finite,
                     peak_rss_mb=round(peak_rss_mb()), parameters_m=round(model.num_parameters() / 1e6, 1),
                     torch=(f"{torch.__version__}, in a child process (bench/common.py ChildTimer)" if torch is not None
                            else "not installed"), **extra_loop)
        prof = None
        if args.profile:
            from minriff.bench.profile import op_profile

            with op_profile() as prof:
                step()
            if args.json:
                extra["profile"] = {"by_op": [dict(op=o, calls=n, seconds=round(s, 4)) for o, n, s in prof.by_op()],
                                    "by_shape": [dict(op=o, shapes=sh, calls=n, seconds=round(s, 4), gflops=round(g, 1))
                                                 for o, sh, n, s, g in prof.by_shape(40)]}
        size = f"{hw * cfg.downscale}x{hw * cfg.downscale} px" if kind != "unet" else ""
        title = {"unet": "UNet step", "vae": f"VAE decode to {size}",
                 "taesd": f"TAESD decode to {size} (full_vae_s: minriff's full VAE, same latents, same rounds)"}[kind]
        emit([row], args.json, f"{title} (median seconds; ratio > 1 means minriff is faster)", extra)
        if prof is not None and not args.json:
            print(f"\nprofile of one more call: {prof.total():.2f} s in ops\n" + prof.table())
        return 0 if finite else 1
