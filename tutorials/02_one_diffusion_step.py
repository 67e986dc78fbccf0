"""Tutorial 2 — one diffusion step by hand: text -> ids -> CLIP states -> UNet -> scheduler -> VAE.

Riffusion is Stable Diffusion v1.5 fine-tuned on spectrogram images. Generating one clip is:

    prompt ─ tokenizer ─> ids (B, 77) ─ CLIP ─> text states (B, 77, C)
    seed ─ rng ─> noise x (1, 4, 64, W/8) ─┐
                                           └─ repeat: UNet predicts the noise in x; the scheduler
                                              removes some of it ─> latents
    latents ─ VAE decoder ─> image (512, W, 3): a mel spectrogram (tutorial 3 turns it into sound)

We do each stage by hand with a *tiny random* model (configs.TINY: the same structure, hidden size
16 instead of 768). Its output is noise, not music, but every shape, formula and code path is the
real one. At the end the hand-made loop is checked against the `minriff.Riffusion` pipeline, step
by step, through the pipeline's per-step `callback`.

Run:  python tutorials/02_one_diffusion_step.py   (about 10 s; writes into $MINRIFF_TUTORIAL_OUT
      or a temporary folder: tiny.safetensors, spectrogram.png)
"""
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from minriff import Riffusion, cli, schedulers, weights
from minriff.latents import model_to_image
from minriff.rng import Generator

OUT = Path(os.environ.get("MINRIFF_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="minriff-tutorial-"))
OUT.mkdir(parents=True, exist_ok=True)
print(f"outputs go to {OUT}")
PROMPT, SEED, GUIDANCE, STEPS = "jazz piano solo", 42, 7.0, 4
WIDTH = 64  # image columns; 10 ms each (0.64 s of audio). The real default is 512 (5.11 s).

# ------------------------------------------------------------------ 0. a tiny random model
# The same as the shell command `minriff init-random --config tiny -o tiny.safetensors`: one
# safetensors file with all three models, their configs, the tokenizer and the scheduler config.
# (`minriff.models.random_models("tiny")` gives the same kind of dict in memory, without a file.)
path = OUT / "tiny.safetensors"
cli.main(["init-random", "--config", "tiny", "--dtype", "fp32", "-o", str(path)])
models = weights.load_models(path)
tokenizer, text_encoder, unet, vae = (models[k] for k in ("tokenizer", "text_encoder", "unet", "vae"))
shapes = {}  # what we will report at the end

# ------------------------------------------------------------------ 1. text -> token ids
# Byte-level BPE: the prompt is split into words, each word into merged byte pairs. Every row
# gets BOS first and EOS after the tokens, and is padded to 77 with the pad id (= EOS for CLIP).
# Classifier-free guidance needs two rows: the empty prompt ("unconditional") and ours.
# (The tiny vocabulary has few merges, so words break into pieces; CLIP's real one has 49,408 tokens.)
tokens = tokenizer.encode(PROMPT)
id_to_token = {i: t for t, i in tokenizer.vocab.items()}
ids = tokenizer(["", PROMPT])  # (2, 77) int64
print(f"1. '{PROMPT}' -> {len(tokens)} tokens {[id_to_token[i] for i in tokens]}")
print(f"   ids {ids.shape}: row 1 starts {ids[1, :len(tokens) + 3].tolist()} "
      f"(BOS={tokenizer.bos_id}, EOS=pad={tokenizer.eos_id})")
shapes["ids"] = ids.shape

# ------------------------------------------------------------------ 2. ids -> CLIP text states
# A causal transformer; the UNet attends to all 77 output vectors (not just a pooled one).
text_states = text_encoder(ids)  # (2, 77, C): row 0 = unconditional, row 1 = our prompt
print(f"2. CLIP text states {text_states.shape} (C = {text_states.shape[-1]}; 768 in the real model)")
shapes["text_states"] = text_states.shape

# ------------------------------------------------------------------ 3. the starting noise
# The UNet works on latents 8× smaller than the image: 512 rows -> 64, WIDTH columns -> WIDTH/8.
# minriff's Generator reproduces torch.Generator("cpu").manual_seed(seed): same seed, same noise.
# The timesteps follow diffusers' "leading" spacing (every 1000/STEPS, plus steps_offset = 1).
# sd_pipeline_config: the config as diffusers' StableDiffusionPipeline runs it, which turns DDIM's
# default clipping of its x0 estimate to [-1, 1] off (the pipeline below does the same).
sched = schedulers.make("ddim", schedulers.sd_pipeline_config(models["scheduler_config"]))
sched.set_timesteps(STEPS)
latent_shape = (1, unet.config.in_channels, 512 // vae.downscale, WIDTH // vae.downscale)
generator = Generator(SEED)
x = generator.randn(latent_shape) * np.float32(sched.init_noise_sigma)  # (1, 4, 64, 8)
print(f"3. noise {x.shape}, std {x.std():.2f}; DDIM timesteps for {STEPS} steps: {sched.timesteps.tolist()}")
shapes["latents"] = x.shape

# ------------------------------------------------------------------ 4. the UNet, with guidance
# One batch of two: the same latents with the unconditional and the prompt's text states.
# Guidance pushes the prediction away from "any spectrogram" towards "this prompt":
#     eps = eps_uncond + g · (eps_cond - eps_uncond)          (g = 7 in Riffusion)
# (Our random model barely listens to the text, so the difference is tiny; a trained one's is not.)


def guided_noise(x, t):
    eps_uncond, eps_cond = unet(np.concatenate([x, x]), t, text_states)  # (2, 4, 64, 8) -> two (4, 64, 8)
    return (eps_uncond + np.float32(GUIDANCE) * (eps_cond - eps_uncond))[None], eps_uncond, eps_cond


t = int(sched.timesteps[0])
eps, eps_uncond, eps_cond = guided_noise(x, t)
text_effect = float(np.linalg.norm(eps_cond - eps_uncond) / np.linalg.norm(eps_uncond))
print(f"4. UNet at t={t}: input {(2,) + x.shape[1:]} -> noise predictions {(2,) + eps.shape[1:]}, "
      f"guided -> {eps.shape}")
print(f"   |eps_cond - eps_uncond| / |eps_uncond| = {text_effect:.1e}; guidance multiplies that part by {GUIDANCE:g}")

# ------------------------------------------------------------------ 5. the scheduler update
# Training noised a clean latent x0 as   x_t = √ā_t · x0 + √(1-ā_t) · noise   (ā_t: alphas_cumprod).
# DDIM inverts that with the predicted noise, then re-noises x0 to the next, lower, timestep:
#     x0     = (x_t - √(1-ā_t) · eps) / √ā_t        (DDIM's own default would clip it to [-1, 1];
#     x_prev = √ā_prev · x0 + √(1-ā_prev) · eps      diffusers' SD pipelines turn that off: see 3.)
a_t = sched.alphas_cumprod[t]
t_prev = int(sched.timesteps[1])
a_prev = sched.alphas_cumprod[t_prev]
x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
x_prev_by_hand = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
x_prev = sched.step(eps, t, x)
step_err = float(np.max(np.abs(x_prev_by_hand - x_prev)))
print(f"5. ā_{t} = {a_t:.4f} (signal {np.sqrt(a_t):.2f}, noise {np.sqrt(1 - a_t):.2f}), ā_{t_prev} = {a_prev:.4f}")
print(f"   x_{t} -> x_{t_prev} by hand vs sched.step: max |difference| {step_err:.1e}")

# The rest of the loop is the same two lines per timestep (we keep every step's latents for section 7):
x = x_prev
hand_latents = [x]
for t in sched.timesteps[1:]:
    x = sched.step(guided_noise(x, t)[0], t, x)
    hand_latents.append(x)

# ------------------------------------------------------------------ 6. VAE decode -> spectrogram image
# The UNet's latents are the VAE's latents times scaling_factor (0.18215 ≈ 1 / their standard
# deviation, measured when Stable Diffusion was trained); undo it, decode, map [-1, 1] to 8 bits.
decoded = vae.decode(x / np.float32(vae.config.scaling_factor))  # (1, 3, 512, WIDTH) in about [-1, 1]
image = model_to_image(decoded)  # (512, WIDTH, 3) uint8
Image.fromarray(image).save(OUT / "spectrogram.png")
print(f"6. VAE decode {x.shape} -> {decoded.shape} -> image {image.shape} -> {OUT / 'spectrogram.png'}")
shapes["image"] = image.shape

# ------------------------------------------------------------------ 7. the same with the pipeline
# Riffusion.generate_spectrogram runs exactly this (plus prompt weighting, which with no
# "(word:1.5)" syntax changes nothing): same seed, scheduler and steps -> the same image.
# `callback` lets us look inside its loop: it is called after every denoising step with the step's
# index, the number of steps, the timestep and the latents. The latents are a read-only view of the
# pipeline's own array (the callback cannot change the run), so we keep copies.
pipeline_latents = []


def watch(step_index, total_steps, timestep, latents):
    pipeline_latents.append(latents.copy())
    print(f"   step {step_index + 1}/{total_steps} t={timestep}: latents std {latents.std():.3f}")


riff = Riffusion(models, quiet=True)
print("7. the pipeline, watched through its callback:")
pipeline_image = riff.generate_spectrogram(PROMPT, seed=SEED, steps=STEPS, scheduler="ddim",
                                           guidance=GUIDANCE, duration_s=WIDTH / 100, callback=watch)
step_diffs = [float(np.max(np.abs(ours - theirs))) for ours, theirs in zip(hand_latents, pipeline_latents)]
pipeline_diff = int(np.max(np.abs(pipeline_image.astype(int) - image.astype(int))))
print(f"   max latent difference to our loop per step: {step_diffs}")
print(f"   pipeline image {pipeline_image.shape}, max pixel difference to ours: {pipeline_diff}")

print("RESULT " + json.dumps({"shapes": {k: list(v) for k, v in shapes.items()}, "timesteps": sched.timesteps.tolist(),
                              "step_max_err": step_err, "text_effect": text_effect,
                              "pipeline_steps_seen": len(pipeline_latents), "pipeline_step_max_latent_diff": step_diffs,
                              "pipeline_max_pixel_diff": pipeline_diff}))
