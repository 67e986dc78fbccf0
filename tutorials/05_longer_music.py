"""Tutorial 5 — longer music: growing a piece clip by clip by outpainting with a latent mask.

The model was trained on 512-px images (5.12 s). A one-minute piece is not one 6016-px image
(attention cost grows with the width squared, and the model never saw such widths); it is a row of
clips, each continuing the one before:

    piece so far:  [ clip 0 .............. ]
    next window:                   [ known | new ..................... ]
                                     ^ the last columns of clip 0, kept by a mask at every step

The new window's first columns are *known* (the end of the previous clip); the rest is new. At every
denoising step the known columns are put back — noised to the level the rest of the latents are at
— so the UNet sees a consistent picture and draws the new part as a continuation of the known one
(through its convolutions and self-attention). Then the known part is dropped and the new appended.

We do one outpainting window by hand with a *tiny random* model (configs.TINY: same code, hidden
size 16; its output is noise, not music) and check it against `Riffusion.generate_long`, see why the
mask's noise level matters, make the whole piece's audio in one pass, and measure the joins.

Run:  python tutorials/05_longer_music.py   (about 20-40 s; writes into $MINRIFF_TUTORIAL_OUT or a
      temporary folder: piece.png, piece.wav)
"""
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from minriff import Riffusion
from minriff.audio import io as audio
from minriff.audio.seams import seam_ratio
from minriff.longform import clip_seed, plan_clips
from minriff.models import random_models
from minriff.rng import Generator

OUT = Path(os.environ.get("MINRIFF_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="minriff-tutorial-"))
OUT.mkdir(parents=True, exist_ok=True)
print(f"outputs go to {OUT}")
PROMPT, SEED, STEPS = "lofi hip hop beat", 7, 4
CLIP, OVERLAP = 128, 64  # px (10 ms each); the real defaults are 512 and 128
SECONDS = 3.2  # -> 320 px: small enough to run in seconds

riff = Riffusion(random_models("tiny"), quiet=True)

# ------------------------------------------------------------------ 1. the windows
# The piece is the duration rounded up to 64 px. Windows of CLIP px; each after the first starts
# OVERLAP px before the end of the piece so far. Everything sits on the 64-px grid: a latent column
# is 8 px, and Riffusion's seed images have a beat every 64 px, so a beat grid carries through.
clips = plan_clips(320, CLIP, OVERLAP)
print("1. windows (start, width, known):", [(c.start, c.width, c.known) for c in clips])

# ------------------------------------------------------------------ 2. the pipeline's piece
# `on_clip` shows every window's final latents and the known latents it was given.
done = []
piece = riff.generate_long(PROMPT, SECONDS, steps=STEPS, guidance=1.0, scheduler="ddim", seed=SEED,
                           clip_px=CLIP, overlap_px=OVERLAP, on_clip=done.append)
Image.fromarray(piece).save(OUT / "piece.png")
print(f"2. generate_long: piece {piece.shape} from {len(done)} clips -> piece.png")
# Clip 0 has nothing known: it is plain text-to-image with the piece's seed.
alone = riff.generate_spectrogram(PROMPT, duration_s=CLIP / 100, steps=STEPS, guidance=1.0, scheduler="ddim",
                                  seed=SEED)
clip0_is_txt2img = bool(np.array_equal(alone, done[0].image))
print(f"   clip 0 equals generate_spectrogram with the same seed: {clip0_is_txt2img}")

# ------------------------------------------------------------------ 3. clip 1 by hand
# Guidance 1 keeps the UNet at batch 1 (tutorial 2 shows guidance). The known latents z are the
# last OVERLAP/8 columns of clip 0's final latents. The mask `keep` is 1 on those columns.
# After each step, the latents are at the noise level of the *next* timestep, so that is the level
# the known columns are put back at: add_noise(z, noise, t_next) = √ā·z + √(1-ā)·noise, with the
# same noise the window started from; after the last step, z itself.
clip = clips[1]
k = clip.known // 8
z = np.zeros(riff.latent_shape(clip.width), np.float32)
z[..., :k] = done[0].latents[..., -k:]
keep = np.zeros((1, 1, 1, clip.width // 8), np.float32)
keep[..., :k] = 1.0
states = riff.encode_prompt(PROMPT)  # (1, 77, C)
sched = riff.make_scheduler("ddim", STEPS)
timesteps = list(sched.timesteps)
noise = Generator(clip_seed(SEED, 1)).randn(z.shape)  # each clip has its own noise, derived from the seed


def denoise(level_after_step):
    """The outpainting loop; `level_after_step(i)` is the timestep the known part is put back at
    after step i (None: clean)."""
    def put_back(x, level):
        kept = z if level is None else sched.add_noise(z, noise, level)
        return (keep * kept + (1 - keep) * x).astype(np.float32)

    x = put_back(noise * np.float32(sched.init_noise_sigma), timesteps[0])
    for i, t in enumerate(timesteps):
        eps = riff.unet(x, t, states)  # (1, 4, 64, w/8)
        x = put_back(sched.step(eps, t, x), level_after_step(i))
    return x


by_hand = denoise(lambda i: timesteps[i + 1] if i + 1 < len(timesteps) else None)
hand_vs_pipeline = float(np.max(np.abs(by_hand - done[1].latents)))
known_err = float(np.max(np.abs(by_hand[..., :k] - done[0].latents[..., -k:])))
print(f"3. clip 1 by hand vs generate_long's latents: max |difference| {hand_vs_pipeline:.1e}")
print(f"   known columns after the last step vs clip 0's: max |difference| {known_err}")

# ------------------------------------------------------------------ 4. why the level matters
# The original's masks (riffuse: reference/riffusion.md §2.5) put the kept region back at the
# timestep of the step *just taken*, one step noisier than the latents around it. For inpainting a
# fuzzy region that is harmless; for outpainting it means the known part never comes back clean:
sched = riff.make_scheduler("ddim", STEPS)
step_just_taken = denoise(lambda i: timesteps[i])
stale_err = float(np.max(np.abs(step_just_taken[..., :k] - done[0].latents[..., -k:])))
print(f"4. known part put back at the step just taken: off by up to {stale_err:.2f} after the last step "
      f"(latent std {float(z[..., :k].std()):.2f})")

# ------------------------------------------------------------------ 5. decoded, the known part agrees
# Same latents, but each window's VAE decode sees different neighbours, so the decoded known
# columns differ a little from the previous clip's; the piece crossfades over them.
a = done[0].image[:, -clip.known:].astype(float)
b = done[1].image[:, :clip.known].astype(float)
decoded_diff = float(np.abs(a - b).mean())
print(f"5. known columns decoded by clip 0 and by clip 1: mean |difference| {decoded_diff:.1f} grey levels")

# ------------------------------------------------------------------ 6. audio in one pass, and its seams
# The whole spectrogram becomes audio at once: Griffin-Lim's phase runs on across the joins. Made
# clip by clip and butted together instead, every join would be a phase jump. The seam measure
# (minriff.audio.seams) compares the spectral flux at the joins with the flux elsewhere (1 = alike).
wave = riff.spectrogram_to_audio(piece)
audio.write_audio(OUT / "piece.wav", wave, 44100)
joins = [c.new_start * 441 for c in clips[1:]]
edges = [0] + [c.new_start for c in clips[1:]] + [piece.shape[1] - 1]
butted = np.concatenate([riff.spectrogram_to_audio(piece[:, p:q + 1]) for p, q in zip(edges, edges[1:])], axis=1)
one_pass, separate = seam_ratio(wave, 44100, joins), seam_ratio(butted, 44100, joins)
print(f"6. audio {wave.shape} = (320 - 1) x 441 samples -> piece.wav")
print(f"   seam ratio at the {len(joins)} joins: one pass {one_pass.mean_ratio:.2f}, "
      f"clips converted apart and butted {separate.mean_ratio:.2f}")

print("RESULT " + json.dumps({
    "windows": [[c.start, c.width, c.known] for c in clips], "piece_shape": list(piece.shape),
    "clip0_is_txt2img": clip0_is_txt2img, "hand_vs_pipeline": hand_vs_pipeline, "known_err": known_err,
    "stale_err": stale_err, "decoded_diff": decoded_diff, "audio_samples": int(wave.shape[1]),
    "seam_one_pass": one_pass.mean_ratio, "seam_butted": separate.mean_ratio}))
