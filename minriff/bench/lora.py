"""`minriff bench lora`: what a LoRA costs at full size. A random rank-128 kohya LoRA (fp16) over every
layer LoCon trains in the UNet (attention, feed-forward, proj, 3x3 convs, samplers, time_emb_proj,
conv_shortcut) and the text encoder (q/k/v/out_proj, fc1, fc2) is written to a temporary file, then
timed on the pipeline: load + merge, set-weight (the re-merge of every touched tensor from the kept
originals, median of --repeat), unload; the extra memory (exact bytes kept for unloading, and the
process's resident-set growth) and whether unloading gave every weight back bit for bit (crc32).

Baselines from the same run: numpy's sgemm rate (the merge is r-deep GEMMs: GFLOP/s as a share of
it), and diffusers + peft on the same weights and file in a child process when they are installed
(`load_lora_weights` + `fuse_lora`, reweight = unfuse + set_adapters + fuse, `unfuse_lora` +
`unload_lora_weights`), as ratios diffusers / minriff (> 1: minriff is faster).
`--weights FILE` (e.g. from `minriff init-random --config sd15`), else random sd15 weights in memory;
`--quick`: the tiny model at rank 4.
"""
from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from minriff.bench.common import ChildTimer, emit, sgemm_gflops, torch_or_none, torch_text_encoder
from minriff.weights.lora_names import Targets
from minriff.weights.safetensors import write_safetensors

LOCON = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "conv1", "conv2",
         "conv_shortcut", "time_emb_proj", "downsamplers.0.conv", "upsamplers.0.conv",
         "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def _pipeline(weights_path, quick: bool):
    from minriff import Riffusion
    from minriff.models import random_models

    if weights_path:
        return Riffusion.load(weights_path, quiet=True), f"file {weights_path}"
    preset = "tiny" if quick else "sd15"
    return Riffusion(random_models(preset), quiet=True), f"random {preset} weights"


def lora_layers(targets: Targets):
    """The Target of every layer kohya/LoCon trains."""
    return [t for t in targets.layers.values() if t.module.endswith(LOCON)]


def write_random_lora(path, layers, rank: int, seed: int = 0) -> int:
    """A kohya-format fp16 LoRA of `rank` on `layers` (values ~ 1e-2: a visible, sane change);
    tensors are made one at a time while written. Returns the merge's FLOPs (2·out·r·in·kh·kw each)."""
    rng = np.random.default_rng(seed)
    items, flops = [], 0
    for t in layers:
        r = min(rank, t.shape[0], int(np.prod(t.shape[1:])))
        name = {"unet": "lora_unet_", "text_encoder": "lora_te_"}[t.component] + t.module.replace(".", "_")
        down = (r, *t.shape[1:])
        up = (t.shape[0], r, 1, 1) if len(t.shape) == 4 else (t.shape[0], r)
        for suffix, shape in ((".lora_down.weight", down), (".lora_up.weight", up)):
            items.append((name + suffix, shape, "F16",
                          lambda s=shape: (rng.standard_normal(s, dtype=np.float32) * 0.01).astype(np.float16)))
        items.append((name + ".alpha", (), "F16", lambda r=r: np.array(r / 2, np.float16)))
        flops += 2 * t.shape[0] * r * int(np.prod(t.shape[1:]))
    write_safetensors(path, items, {"ss_network_module": "networks.lora", "ss_network_dim": str(rank)})
    return flops


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _crcs(riff, layers) -> dict:
    out = {}
    for t in layers:
        p = dict(getattr(riff, t.component).named_parameters())[t.module + ".weight"]
        out[t.label] = zlib.crc32(memoryview(np.ascontiguousarray(p)).cast("B"))
    return out


def run(args) -> int:
    quick = args.quick
    rank = args.rank or (4 if quick else 128)
    repeat = max(3, args.repeat or 3)
    t0 = time.perf_counter()
    riff, source = _pipeline(args.weights, quick)
    build_s = time.perf_counter() - t0
    layers = lora_layers(riff._lora.targets(riff))
    with tempfile.TemporaryDirectory(prefix="minriff-bench-lora-") as tmp:
        path = Path(tmp) / "bench_lora.safetensors"
        flops = write_random_lora(path, layers, rank)
        file_mb = path.stat().st_size / 2**20
        before = _crcs(riff, layers)
        rss0 = rss_mb()
        t0 = time.perf_counter()
        name = riff.load_lora(path)
        load_s = time.perf_counter() - t0
        rss1, kept = rss_mb(), riff._lora.kept_bytes
        set_times = []
        for i in range(repeat):
            t0 = time.perf_counter()
            riff.set_lora_weight(name, 0.5 if i % 2 == 0 else 1.0)
            set_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        riff.unload_lora(name)
        unload_s = time.perf_counter() - t0
        identical = _crcs(riff, layers) == before
        rss2 = rss_mb()
        peak = sgemm_gflops()
        set_s = statistics.median(set_times)
        del riff  # the diffusers child loads its own copy: never both at full size
        gc.collect()
        torch_row = _torch_times(args, path, quick) if torch_or_none() is not None else None
    rows = [dict(stage="load + merge", minriff_s=load_s, diffusers_s=None),
            dict(stage="set weight (re-merge)", minriff_s=set_s, diffusers_s=None),
            dict(stage="unload", minriff_s=unload_s, diffusers_s=None)]
    if torch_row is not None:
        for row, key in zip(rows, ("load_fuse", "reweight", "unload")):
            row["diffusers_s"] = torch_row.get(key)
            row["ratio_diffusers_over_minriff"] = (row["diffusers_s"] / row["minriff_s"]
                                                   if isinstance(row["diffusers_s"], float) else None)
    touched = sum(int(np.prod(t.shape)) for t in layers)
    extra = dict(weights=source, build_s=round(build_s, 1), rank=rank, layers=len(layers),
                 touched_parameters=touched, lora_file_mb=round(file_mb, 1),
                 kept_for_unload_mb=round(kept / 2**20, 1), kept_for_unload_bytes=kept,
                 rss_growth_after_load_mb=round(rss1 - rss0),
                 rss_after_unload_minus_before_mb=round(rss2 - rss0),
                 merge_gflops=round(flops / set_s / 1e9, 1), sgemm_gflops=round(peak, 1),
                 merge_share_of_sgemm=float(f"{flops / set_s / 1e9 / peak:.3g}"), unload_bit_identical=identical)
    if torch_row is not None:
        extra["diffusers"] = torch_row.get("note")
    emit(rows, args.json, f"LoRA rank {rank} over UNet + text encoder (seconds; ratio > 1 means minriff is faster)",
         extra)
    return 0 if identical else 1


def _torch_times(args, path, quick) -> dict:
    try:
        import diffusers  # noqa: F401
        import peft  # noqa: F401
    except ImportError as e:
        return {"note": f"not compared ({e.name} not installed)"}
    try:
        child = ChildTimer(_diffusers_lora, (args.weights, quick, str(path)))
    except RuntimeError as e:
        return {"note": f"unavailable: {e}"}
    try:
        out = {"load_fuse": child.value("load_fuse")}
        child.value("fused")
        out.update({key: child.value(key) for key in ("reweight", "unload")})
        out["note"] = (f"diffusers + peft in a child process; after unfuse_lora, bit-identical: "
                       f"{child.value('identical')}")
        return out
    finally:
        child.close()


def _diffusers_lora(weights_path, quick, lora_path, threads=None) -> dict:
    """ChildTimer factory: diffusers' UNet and CLIP text encoder on the same weights, the same file
    through `load_lora_weights`; each callable returns its own wall time (they run once, in order)."""
    import torch
    from diffusers import StableDiffusionPipeline

    from minriff.bench.unet import _torch_model

    if threads:
        torch.set_num_threads(threads)
    riff, _ = _pipeline(weights_path, quick)
    unet = _torch_model("unet", torch, riff.unet, riff.config.unet)
    te = torch_text_encoder(riff.text_encoder, dtype=None)
    del riff
    pipe = StableDiffusionPipeline(vae=None, text_encoder=te.eval(), tokenizer=None, unet=unet, scheduler=None,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    def crcs():
        return {k: zlib.crc32(v.detach().contiguous().numpy().tobytes()) for m in (unet, te)
                for k, v in m.state_dict().items() if k.endswith("weight") and "lora_" not in k}

    before = crcs()

    def timed(fn):
        def call():
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            return time.perf_counter() - t0
        return call

    changed = []

    def load_fuse():
        pipe.load_lora_weights(lora_path, adapter_name="bench")
        pipe.fuse_lora(lora_scale=1.0)

    def reweight():
        pipe.unfuse_lora()
        pipe.set_adapters(["bench"], [0.5])
        pipe.fuse_lora(lora_scale=1.0)

    def unload():
        pipe.unfuse_lora()
        pipe.unload_lora_weights()

    def fused():  # (untimed) which weights the fused LoRA changed; state-dict keys of PEFT-wrapped layers
        after = {k.replace(".base_layer.", "."): v for k, v in crcs().items()}
        changed.extend(k for k, v in before.items() if after.get(k) != v)
        return len(changed)

    def identical():
        after = crcs()
        return f"{sum(after.get(k) == before[k] for k in changed)} of the {len(changed)} changed weights"

    return {"load_fuse": timed(load_fuse), "fused": fused, "reweight": timed(reweight), "unload": timed(unload),
            "identical": identical}
