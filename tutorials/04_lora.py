"""Tutorial 4 — LoRA: a low-rank update of a weight, written out by hand, then loaded by the pipeline.

A LoRA ("low-rank adaptation") file changes some layers of the model without storing them. For a
layer with weight W (out × in; a conv's is out × in × kh × kw) it holds two thin matrices and a number:

    down A (r × in [× kh × kw])   up B (out × r [× 1 × 1])   alpha

with a rank r much smaller than out and in. The adapted layer is

    W' = W + s · B @ A,    s = weight × alpha / r

where `weight` is the strength the user picks (0 = off, 1 = as trained). B @ A has rank r: a
"direction" of change that costs r·(out + in) numbers instead of out·in. Training learns A and B
(usually B starts at zero, so W' = W at first); alpha / r keeps the step size independent of r.

We write a small LoRA file by hand in the kohya-ss format (the one most shared files use) for three
layers of a tiny random model — a UNet attention projection, the UNet's stride-2 downsampling conv
(a "LoCon" 3×3 conv: A has the conv's kernel, B is 1×1) and a text-encoder MLP layer — compute
W + s·B@A ourselves, and check it against what `Riffusion.load_lora` merged. Then: the same result
computed the way a LoRA runs unmerged (y = W x + s·B(A x)), reweighting, stacking, unloading.

Run:  python tutorials/04_lora.py   (a few seconds; writes style.safetensors and second.safetensors
      into $MINRIFF_TUTORIAL_OUT or a temporary folder)
"""
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from minriff import Riffusion
from minriff.models import random_models
from minriff.weights import write_safetensors

OUT = Path(os.environ.get("MINRIFF_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="minriff-tutorial-"))
OUT.mkdir(parents=True, exist_ok=True)
print(f"outputs go to {OUT}")
rng = np.random.default_rng(4)
result = {}

# ------------------------------------------------------------------ 0. a tiny random pipeline
riff = Riffusion(random_models("tiny"), quiet=True)
LAYERS = {  # (component, module path = the diffusers / transformers name): rank, alpha
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"): (2, 4.0),
    ("unet", "down_blocks.0.downsamplers.0.conv"): (2, 1.0),
    ("text_encoder", "text_model.encoder.layers.0.mlp.fc1"): (4, 4.0),
}


def weight_of(r, comp, module):
    return dict(getattr(r, comp).named_parameters())[module + ".weight"]


original = {key: weight_of(riff, *key).copy() for key in LAYERS}
for (comp, module), w in original.items():
    print(f"0. {comp}.{module}: weight {w.shape}")

# ------------------------------------------------------------------ 1. a LoRA file, by hand
# kohya-ss names a layer "lora_unet_" / "lora_te_" + its path with every "." turned into "_".
# That cannot be split back ("to_q", "transformer_blocks" contain "_" themselves): readers keep a
# table of the flattened names of the model's own layers (minriff: weights/lora_names.py).
tensors, pairs = [], {}
for (comp, module), (rank, alpha) in LAYERS.items():
    w = original[comp, module]
    out, fan_in = w.shape[0], int(np.prod(w.shape[1:]))
    down = (rng.standard_normal((rank, *w.shape[1:])) / np.sqrt(fan_in)).astype(np.float32)  # A
    up = (rng.standard_normal((out, rank)) * 0.3 * w.std()).astype(np.float32)  # B
    if w.ndim == 4:
        up = up.reshape(out, rank, 1, 1)  # a 1×1 conv after the kh×kw one
    name = {"unet": "lora_unet_", "text_encoder": "lora_te_"}[comp] + module.replace(".", "_")
    pairs[comp, module] = (down, up, alpha)
    for suffix, a in ((".lora_down.weight", down), (".lora_up.weight", up), (".alpha", np.float32(alpha))):
        tensors.append((name + suffix, np.shape(a), "F32", lambda a=a: np.asarray(a)))
    print(f"1. {name}: lora_down {down.shape}, lora_up {up.shape}, alpha {alpha:g}  (rank {rank})")
path = OUT / "style.safetensors"
write_safetensors(path, tensors)
result["keys"] = sorted(t[0] for t in tensors)

# ------------------------------------------------------------------ 2. W' = W + s·B@A, ourselves
WEIGHT = 0.8
by_hand = {}
for (comp, module), (down, up, alpha) in pairs.items():
    rank = down.shape[0]
    s = WEIGHT * alpha / rank
    B = up.reshape(up.shape[0], rank).astype(np.float64)  # (out, r)
    # the conv case is the same product, kept per kernel tap: ΔW[o, i, y, x] = Σ_r B[o, r] · A[r, i, y, x]
    delta = np.einsum("or,r...->o...", B, down.astype(np.float64))
    by_hand[comp, module] = original[comp, module] + s * delta
    print(f"2. {module}: s = {WEIGHT} × {alpha:g} / {rank} = {s:g}; |s·ΔW| / |W| = "
          f"{np.linalg.norm(s * delta) / np.linalg.norm(original[comp, module]):.2f}; rank of ΔW "
          f"{np.linalg.matrix_rank(delta.reshape(delta.shape[0], -1))}")

# ------------------------------------------------------------------ 3. the pipeline's merge
name = riff.load_lora(path, weight=WEIGHT)
print(f"3. riff.load_lora -> {name!r}: {riff.loras[0]}")
errors = {}
for key in LAYERS:
    merged = weight_of(riff, *key)
    errors[key[1].split(".")[-1]] = float(np.abs(merged - by_hand[key]).max() / np.abs(by_hand[key]).max())
print(f"   merged vs by hand, max relative difference: {errors}")
result["merge_max_err"] = errors

# ------------------------------------------------------------------ 4. unmerged: y = W x + s·B(A x)
# A LoRA can also run beside the layer: two thin matmuls per call (r·(in + out) multiply-adds per
# position). Merged, the cost is zero per step: the pipeline merges (and keeps W to undo it).
key = ("text_encoder", "text_model.encoder.layers.0.mlp.fc1")
down, up, alpha = pairs[key]
x = rng.standard_normal((5, down.shape[1])).astype(np.float64)  # 5 positions
side = x @ original[key].T.astype(np.float64) + WEIGHT * alpha / down.shape[0] * ((x @ down.T) @ up.T)
merged_y = x @ weight_of(riff, *key).T.astype(np.float64)
result["unmerged_vs_merged_err"] = float(np.abs(side - merged_y).max() / np.abs(side).max())
lora_params = sum(d.size + u.size for d, u, _ in pairs.values())
layer_params = sum(w.size for w in original.values())
result["lora_params"], result["layer_params"] = int(lora_params), int(layer_params)
print(f"4. y = Wx + s·B(Ax) vs the merged layer: {result['unmerged_vs_merged_err']:.1e}; "
      f"the LoRA has {lora_params} numbers for layers of {layer_params}")

# ------------------------------------------------------------------ 5. reweight, stack, unload
# Every change is recomputed from the kept original W, so the result never depends on history.
riff.set_lora_weight(name, WEIGHT / 2)
key = ("unet", "down_blocks.0.downsamplers.0.conv")
half = weight_of(riff, *key) - original[key]
full = by_hand[key] - original[key]
result["half_weight_err"] = float(np.abs(half - full / 2).max() / np.abs(full).max())
print(f"5. weight {WEIGHT / 2}: the change is half of weight {WEIGHT}'s (error {result['half_weight_err']:.1e})")

states_before = riff.encode_prompt("jazz")
second = {}
for (comp, module), (down, up, alpha) in pairs.items():  # a second LoRA on the same layers: B and A swapped signs
    prefix = {"unet": "lora_unet_", "text_encoder": "lora_te_"}[comp] + module.replace(".", "_")
    second[prefix] = (down, -0.5 * up, alpha)
tensors = [(n + sfx, np.shape(a), "F32", lambda a=a: np.asarray(a)) for n, (d, u, al) in second.items()
           for sfx, a in ((".lora_down.weight", d), (".lora_up.weight", u), (".alpha", np.float32(al)))]
write_safetensors(OUT / "second.safetensors", tensors)
riff.set_lora_weight(name, WEIGHT)
riff.load_lora(OUT / "second.safetensors", weight=1.0)
key = ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
expected = by_hand[key] + (-0.5) * (by_hand[key] - original[key]) / WEIGHT * 1.0
result["stacked_err"] = float(np.abs(weight_of(riff, *key) - expected).max() / np.abs(expected).max())
print(f"   stacked with a second LoRA: W + 0.8·s·ΔW + 1.0·s·(-0.5·ΔW), error {result['stacked_err']:.1e}")
result["text_states_changed"] = bool(np.abs(riff.encode_prompt("jazz") - states_before).max() > 0)
for info in riff.loras:
    riff.unload_lora(info.name)
same = all(np.array_equal(weight_of(riff, *k).view(np.uint32), w.view(np.uint32)) for k, w in original.items())
result["unload_bit_identical"] = same
print(f"   after unloading both: every weight bit for bit the original: {same}")

print("RESULT " + json.dumps(result))
