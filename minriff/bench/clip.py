"""`minriff bench clip [--preset quality|fast]`: seconds for one 5.11 s clip, prompt to WAV bytes,
with the weights loaded beforehand, split by stage, and the real-time factor (seconds / 5.11; <= 1
keeps up with playback).

Stages (minriff): text = `encode_prompt` (the prompt, and with guidance > 1 the empty negative
prompt; the text cache is cleared before every clip), denoise = the sampling loop (the rest of
`generate_spectrogram`), decode = `decode_latents` (the full VAE or TAESD), audio = spectrogram
image -> waveform (inverse mel + Griffin-Lim, 32 iterations) -> WAV bytes.

Weights: `--weights FILE` (a converted file), else random SD 1.5-shaped weights made in memory; a
random rank-64 LoRA in LCM-LoRA's shape (kohya keys on every UNet layer the LCM distillation script
trains: attention, feed-forward, proj, 3x3 convs, samplers, time_emb_proj) is merged with
`Riffusion.load_lora`, as a user of the fast preset would; random TAESD weights in madebyollin/taesd's
shapes. `--quick`: the tiny model, tiny TAESD and rank 4 (a smoke run; its numbers mean nothing).

Baseline, when torch and diffusers are installed: diffusers running the same preset on the same
weights in a child process (bench/common.py ChildTimer), rounds interleaved with minriff's clips.
The child builds the same models (the same file, or the same deterministic random values), merges
the same LoRA file with minriff's loader and hands the merged arrays to diffusers' modules (so both
sides run identical weights; the merge itself is load time, not timed). diffusers' stages: text =
transformers' CLIPTextModel on the same token ids (x2 with guidance > 1); denoise =
`StableDiffusionPipeline(..., output_type="latent")` with the preset's scheduler (DPMSolverMultistep
for quality's dpmpp2m, LCMScheduler for fast), guidance and steps, and for fast the DeepCache
package's `DeepCacheSDHelper` (uniform interval, the same branch; reference
fast_sampling_lora_controlnet.md §3: its uniform mode works on diffusers 0.42) or, without the
package, no DeepCache (then said in the output); decode = `AutoencoderKL.decode` or
`AutoencoderTiny.decode` + the pipeline's image post-processing; audio = librosa (diffusers has no
audio; Riffusion's torchaudio path is not installable here): the pseudo-inverse mel and
`librosa.griffinlim` (32 iterations, momentum 0.99), then WAV bytes with soundfile.

Peak RSS is this process's (minriff's side only; the diffusers child is a separate process).
"""
from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from minriff import kernels, presets
from minriff.bench.common import ChildTimer, emit, peak_rss_mb, torch_or_none, torch_text_encoder
from minriff.bench.ops import SETTLE_S

CLIP_S = 5.11  # 512 px at 10 ms per column, (512 - 1) * 441 samples at 44.1 kHz
PROMPT = "jazz piano solo with a walking bass line"
SEED = 42
LORA_RANK = 64
STAGES = ("text", "denoise", "decode", "audio")
LCM_LORA_UNET = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "conv1",
                 "conv2", "conv_shortcut", "time_emb_proj", "downsamplers.0.conv", "upsamplers.0.conv")


def build(weights_path, quick: bool, lora_dir):
    """The pipeline of the bench (both processes build it alike): weights, LoRA merged, TAESD attached."""
    from minriff import Riffusion
    from minriff.bench.lora import write_random_lora
    from minriff.models import random_models
    from minriff.models.init import random_taesd

    taesd = random_taesd("tiny" if quick else "taesd")
    if weights_path:
        riff, source = Riffusion.load(weights_path, quiet=True, taesd=taesd), f"file {weights_path}"
    else:
        size = "tiny" if quick else "sd15"
        riff, source = Riffusion(random_models(size), quiet=True, taesd=taesd), f"random {size} weights"
    rank = 4 if quick else LORA_RANK
    path = Path(lora_dir) / "lcm_lora_shape.safetensors"
    if not path.exists():
        layers = [t for t in riff._lora.targets(riff).layers.values()
                  if t.component == "unet" and t.module.endswith(LCM_LORA_UNET)]
        write_random_lora(path, layers, rank)
    riff.load_lora(path)
    # The bench never unloads: drop the originals kept for unloading (at SD 1.5 size ~3.4 GB of
    # float32 UNet tensors; diffusers' fuse_lora keeps none), so memory is that of a fused model.
    riff._lora = type(riff._lora)()
    return riff, f"{source}, random rank-{rank} LoRA in LCM-LoRA's shape merged, random TAESD"


def minriff_clip(riff, opts: dict, duration_s: float = 5.0) -> tuple[dict, np.ndarray]:
    """One clip, prompt to WAV bytes: (seconds per stage, the spectrogram image)."""
    from minriff.audio.io import encode_audio

    spent = dict.fromkeys(STAGES, 0.0)

    def timed(stage, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[stage] += time.perf_counter() - t0
        return wrapper

    riff._text_cache.clear()
    riff.encode_prompt = timed("text", type(riff).encode_prompt.__get__(riff))
    riff.decode_latents = timed("decode", type(riff).decode_latents.__get__(riff))
    try:
        t0 = time.perf_counter()
        image = riff.generate_spectrogram(PROMPT, duration_s=duration_s, seed=SEED, **opts)
        spent["denoise"] = time.perf_counter() - t0 - spent["text"] - spent["decode"]
    finally:
        del riff.encode_prompt, riff.decode_latents
    t0 = time.perf_counter()
    encode_audio(riff.spectrogram_to_audio(image), 44100, "wav")
    spent["audio"] = time.perf_counter() - t0
    return spent, image


# ---- the diffusers side (runs in the ChildTimer process) -------------------------------------------

def _torch_module(cls, torch, model, **config):
    """diffusers' model sharing the (float32) arrays of a minriff model; built on the meta device."""
    with torch.device("meta"):
        tm = cls(**config)
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in model.named_parameters()}
    tm.load_state_dict(state, strict=True, assign=True)
    return tm.eval()


def _config_kwargs(cfg) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in ("num_attention_heads",) or v is not None}


def diffusers_factory(weights_path, quick: bool, lora_dir, preset: str, ids: np.ndarray, threads=None) -> dict:
    """ChildTimer factory: one clip in diffusers (module docstring), one callable per stage."""
    import diffusers
    import torch

    if threads:
        torch.set_num_threads(threads)
    riff, _ = build(weights_path, quick, lora_dir)
    opts = presets.options(preset)
    te = torch_text_encoder(riff.text_encoder)
    unet = _torch_module(diffusers.UNet2DConditionModel, torch, riff.unet, **_config_kwargs(riff.config.unet))
    if opts["decoder"] == "taesd":
        vae = _torch_module(diffusers.AutoencoderTiny, torch, riff.taesd, **_config_kwargs(riff.taesd.config))
    else:
        vae = _torch_module(diffusers.AutoencoderKL, torch, riff.vae, **_config_kwargs(riff.config.vae))
    sched_cls = diffusers.LCMScheduler if opts["scheduler"] == "lcm" else diffusers.DPMSolverMultistepScheduler
    scheduler = sched_cls.from_config(riff.scheduler_config)
    del riff
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=None, unet=unet, scheduler=scheduler,
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    deepcache = "off"
    if opts["cache_interval"]:
        try:
            from DeepCache import DeepCacheSDHelper

            helper = DeepCacheSDHelper(pipe=pipe)
            helper.set_params(cache_interval=opts["cache_interval"], cache_branch_id=opts["cache_branch"])
            helper.enable()
            deepcache = f"DeepCacheSDHelper, interval {opts['cache_interval']}, branch {opts['cache_branch']}"
        except ImportError:
            deepcache = "the DeepCache package is not installed: diffusers ran without DeepCache"
    cfg = opts["guidance"] > 1
    ids_t = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    state: dict = {}

    def text():
        with torch.inference_mode():
            state["cond"] = te(ids_t[:1])[0]
            state["uncond"] = te(ids_t[1:])[0] if cfg else None

    def denoise(steps=opts["steps"]):
        with torch.inference_mode():
            state["latents"] = pipe(prompt_embeds=state["cond"], negative_prompt_embeds=state["uncond"],
                                    num_inference_steps=steps, guidance_scale=opts["guidance"],
                                    height=512, width=64 if quick else 512, output_type="latent",
                                    generator=torch.Generator("cpu").manual_seed(SEED)).images

    def warmup():  # one short clip, untimed, as minriff's
        text(), denoise(min(2, opts["steps"])), decode(), audio()

    def decode():
        with torch.inference_mode():
            z = state["latents"] / vae.config.scaling_factor
            out = vae.decode(z).sample
            state["image"] = pipe.image_processor.postprocess(out, output_type="np")[0]

    inverse_basis = _librosa_inverse_basis()  # set-up, as minriff's cached plan: not timed

    def audio():
        state["wav"] = _librosa_audio(state["image"], inverse_basis)

    return {"text": text, "denoise": denoise, "decode": decode, "audio": audio, "warmup": warmup,
            "image": lambda: (np.clip(state["image"], 0, 1) * 255).round().astype(np.uint8),
            "deepcache": lambda: deepcache}


def _librosa_inverse_basis() -> np.ndarray:
    import librosa

    from minriff.audio.spectrogram import SpectrogramParams

    p = SpectrogramParams()
    basis = librosa.filters.mel(sr=p.sample_rate, n_fft=p.n_fft, n_mels=p.num_frequencies, fmin=p.min_frequency,
                                fmax=p.max_frequency, htk=True, norm=None)
    return np.linalg.pinv(basis)  # (F, M)


def _librosa_audio(image01: np.ndarray, inverse_basis: np.ndarray) -> bytes:
    import librosa
    import soundfile

    from minriff.audio.spectrogram import SpectrogramParams, image_to_mel

    p = SpectrogramParams()
    mel = image_to_mel((np.clip(image01, 0, 1) * 255).round().astype(np.uint8), p)[0]  # (M, T)
    mag = np.clip(inverse_basis @ mel, 0, None)
    wave = librosa.griffinlim(mag, n_iter=p.num_griffin_lim_iters, hop_length=p.hop_length,
                              win_length=p.win_length, n_fft=p.n_fft, window="hann", center=True, momentum=0.99,
                              init="random", random_state=0)
    buf = io.BytesIO()
    soundfile.write(buf, wave.astype(np.float32), p.sample_rate, format="WAV")
    return buf.getvalue()


# ---- the bench -----------------------------------------------------------------------------------

def _token_ids(riff, guidance: float) -> np.ndarray:
    return riff.tokenizer([PROMPT, ""] if guidance > 1 else [PROMPT])  # (1 or 2, 77)


def run(args) -> int:
    import numba

    preset = presets.check_name(args.preset or "quality")
    opts = presets.options(preset)
    quick = args.quick
    rounds = max(1, args.rounds or 2)
    threads = numba.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="minriff-bench-clip-") as lora_dir:
        t0 = time.perf_counter()
        riff, source = build(args.weights, quick, lora_dir)
        build_s = time.perf_counter() - t0
        duration = 0.64 if quick else 5.0  # quick: 64 px
        # an untimed short clip first (kernel compilation, caches), on each side. Its loop gets the
        # kernel-cache budget of the timed clips' loops, so it leaves the cache's buffers paged in
        # as a resident server's earlier clip does (pipeline.kernel_cache_budget)
        riff.kernel_cache_bytes = riff.kernel_cache_budget(opts["steps"])
        try:
            first, _ = minriff_clip(riff, {**opts, "steps": min(2, opts["steps"])}, duration)
        finally:
            riff.kernel_cache_bytes = None
        torch, child, note = torch_or_none(), None, None
        if torch is not None:
            try:
                ids = _token_ids(riff, opts["guidance"])
                child = ChildTimer(diffusers_factory, (args.weights, quick, lora_dir, preset, ids), threads)
            except RuntimeError as e:
                note = f"unavailable: {e}"
        if child is not None:
            child.value("warmup")
        ours, theirs = [], []
        diff = None
        try:
            for _ in range(rounds):
                time.sleep(SETTLE_S)
                spent, image = minriff_clip(riff, opts, duration)
                ours.append(spent)
                if child is not None:
                    theirs.append({s: (time.sleep(SETTLE_S), child.time(s, warm=False))[1] for s in STAGES})
            if child is not None:
                note = child.value("deepcache")
                ref = child.value("image")
                if ref.shape == image.shape:
                    gap = np.abs(ref.astype(int) - image.astype(int))
                    diff = {"max": int(gap.max()), "share_within_1": round(float(np.mean(gap <= 1)), 5)}
        finally:
            if child is not None:
                child.close()
    rows = []
    for stage in (*STAGES, "total"):
        def median(runs, stage=stage):
            return statistics.median(sum(r.values()) if stage == "total" else r[stage] for r in runs)
        row = dict(stage=stage, minriff_s=median(ours), diffusers_s=median(theirs) if theirs else None)
        row["diffusers_over_minriff"] = row["diffusers_s"] / row["minriff_s"] if theirs else None
        rows.append(row)
    total = rows[-1]["minriff_s"]
    extra = dict(preset=f"{preset}: " + ", ".join(f"{k}={v}" for k, v in opts.items()), weights=source,
                 rounds=rounds, threads=threads, build_s=round(build_s, 1), warmup_clip_s=round(sum(first.values()), 1),
                 clip_s=CLIP_S, real_time_factor=round(total / CLIP_S, 3),
                 peak_rss_mb=round(peak_rss_mb()),
                 kernel_cache_kept_mb=round(kernels.weight_cache_pooled_bytes() / (1 << 20)),
                 diffusers=(note or "in a child process (bench/common.py ChildTimer)") if torch is not None
                 else "torch not installed: no baseline",
                 pixel_diff_vs_diffusers=diff)
    emit(rows, args.json, "One 5.11 s clip, prompt to WAV (median seconds per stage; "
                          "diffusers_over_minriff > 1 means minriff is faster)", extra)
    return 0
