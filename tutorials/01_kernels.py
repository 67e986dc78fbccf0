"""Tutorial 1 — the op layer: one op, several backends, and swapping a kernel under a real model.

Every model in minriff (CLIP, UNet, VAE) computes through a small set of *ops* — conv2d, linear,
group_norm, layer_norm, attention, softmax, silu, gelu, quick_gelu, geglu, upsample_nearest2x,
timestep_embedding — looked up at call time with `kernels.ops()`. Each op exists per backend with
the same signature:

    ref   kernels/ref.py          NumPy, written to be read (works in float64 too)
    cpu   kernels/cpu/            Numba kernels around BLAS (the default)
    cuda  kernels/cuda/*.cu       CUDA C launched through CuPy

What you will see:
  1. the same op on `ref` (float64) and `cpu` (float32): how far apart they are;
  2. attention: the reference forms the whole (Tq, Tk) score matrix; the cpu kernel visits the
     keys tile by tile with an *online softmax*. We write that algorithm in 15 lines of NumPy;
  3. `kernels.override`: wrap every op to count what a tiny UNet calls and time it; then swap in
     a replacement kernel (GELU with the tanh approximation) for one `with` block and measure how
     much the UNet's output moves.

Run:  python tutorials/01_kernels.py      (about 10 s; writes nothing)
"""
import contextlib
import json
import time

import numpy as np

from minriff import kernels
from minriff.configs import TINY
from minriff.models import init_random
from minriff.models.unet import UNet2DConditionModel

rng = np.random.default_rng(0)
ref, cpu = kernels.ops("ref"), kernels.ops("cpu")


def max_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ------------------------------------------------------------------ 1. one op, two backends
# Feed `ref` float64 copies: it then computes in float64 and serves as the "exact" answer for the
# float32 `cpu` kernels. Shapes are checked in front of every backend (kernels/checks.py).
print("1. ref (float64) vs cpu (float32), max |difference|")
x = rng.standard_normal((2, 8, 16, 16)).astype(np.float32)  # (N, C, H, W)
w = (rng.standard_normal((4, 8, 3, 3)) / 8).astype(np.float32)  # (O, C, kh, kw)
gamma, beta = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
x64, gamma64, beta64 = x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64)
op_errors = {
    "conv2d": max_err(ref.conv2d(x64, w.astype(np.float64), padding=1), cpu.conv2d(x, w, padding=1)),
    "group_norm+silu": max_err(ref.group_norm(x64, 4, gamma64, beta64, 1e-5, silu=True),
                               cpu.group_norm(x, 4, gamma, beta, 1e-5, silu=True)),
    "softmax": max_err(ref.softmax(x64, axis=-1), cpu.softmax(x, axis=-1)),
    "gelu": max_err(ref.gelu(x64), cpu.gelu(x)),
}
for name, err in op_errors.items():
    print(f"   {name:16s} {err:.2e}")

# ------------------------------------------------------------------ 2. attention, two ways
# ref.attention (read it in kernels/ref.py) is the textbook formula softmax(q kᵀ / √D) v: it builds
# the (Tq, Tk) score matrix. At Riffusion's 64×64 latents the UNet's first self-attention has
# Tq = Tk = 4096 tokens, 8 heads, batch 2 (guidance): that matrix alone is 4096² · 8 · 2 · 4 B = 1 GiB.
# The cpu kernel (kernels/cpu/attention.py) never builds it. It walks over the keys in tiles and
# keeps, for every query, the running max m, the running sum l of exp(s - m) and the running
# output acc. When a new tile raises the max, the old sum and output are rescaled by exp(m_old - m_new).
# The result is the same softmax, exactly (up to rounding). Here is the idea in NumPy:


def attention_online(q, k, v, tile=64):
    """q (B, H, Tq, D), k/v (B, H, Tk, D) -> (B, H, Tq, D), never more than `tile` keys at once."""
    scale = 1.0 / np.sqrt(q.shape[-1])
    m = np.full(q.shape[:-1], -np.inf)  # (B, H, Tq) running max of the scores
    l = np.zeros(q.shape[:-1])  # running sum of exp(score - m)
    acc = np.zeros(q.shape)  # running sum of exp(score - m) · v
    for k0 in range(0, k.shape[-2], tile):
        s = (q @ k[..., k0:k0 + tile, :].swapaxes(-1, -2)) * scale  # (B, H, Tq, tile)
        m_new = np.maximum(m, s.max(axis=-1))
        p = np.exp(s - m_new[..., None])
        rescale = np.exp(m - m_new)  # exp(-inf) = 0 on the first tile
        l = l * rescale + p.sum(axis=-1)
        acc = acc * rescale[..., None] + p @ v[..., k0:k0 + tile, :]
        m = m_new
    return acc / l[..., None]


q, k, v = (rng.standard_normal((1, 2, 300, 16)) for _ in range(3))  # (B, H, T, D), float64
exact = ref.attention(q, k, v)
attention_errors = {
    "online (NumPy, float64)": max_err(attention_online(q, k, v), exact),
    "cpu kernel (float32)": max_err(cpu.attention(*(a.astype(np.float32) for a in (q, k, v))), exact),
}
print("2. attention vs ref.attention (float64), max |difference|")
for name, err in attention_errors.items():
    print(f"   {name:24s} {err:.2e}")
# (The cpu kernel also multiplies q by scale·log2(e) once and uses exp2: fewer operations per score.)

# ------------------------------------------------------------------ 3. swap a kernel under the UNet
# A tiny UNet (configs.TINY: the structure of Stable Diffusion's UNet, ~50 thousand parameters).
# Its parameters have the names of the checkpoint keys; `minriff.models.init_random` fills them with random
# values (weights scaled by 1/√fan_in so activations stay of order 1 and the kernels have something
# to do; norm scales about 1, biases small).
unet = init_random(UNet2DConditionModel(TINY.unet), seed=0)
ff_key = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"
print(f"3. tiny UNet: {unet.num_parameters()} parameters, e.g. {ff_key} {unet.parameter_shapes()[ff_key]}")

latents = rng.standard_normal((1, 4, 32, 32)).astype(np.float32)  # (B, 4, h, w)
text = rng.standard_normal((1, 77, TINY.unet.cross_attention_dim)).astype(np.float32)  # (B, 77, C)
kernels.backend("cpu")
baseline = unet(latents, 500, text)  # predicted noise, (1, 4, 32, 32)

# Which ops does the UNet call, and where does the time go? `kernels.override(backend, op, fn)`
# replaces one op for the duration of a `with` block (the shape checks still run in front of it)
# and puts back what was there before when the block ends, even if it ends with an exception.
# We wrap every op (`cpu.<op>_unchecked` is the backend's own function); an ExitStack holds the
# twelve overrides open together and closes them all at its end.
calls, seconds = {}, {}


def counted(op, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        calls[op] = calls.get(op, 0) + 1
        seconds[op] = seconds.get(op, 0.0) + time.perf_counter() - t0
        return out
    return wrapper


with contextlib.ExitStack() as overrides:
    for op in kernels.OP_NAMES:
        overrides.enter_context(kernels.override("cpu", op, counted(op, getattr(cpu, op + "_unchecked"))))
    unet(latents, 500, text)
slowest_first = sorted(calls, key=seconds.get, reverse=True)
print("   op calls in one UNet forward:",
      ", ".join(f"{op} {calls[op]}× {seconds[op] * 1e3:.0f} ms" for op in slowest_first))
# The same wrapper, packaged with a key per operand shape and GFLOP/s for conv/linear/attention:
# `with minriff.bench.profile.op_profile() as prof: unet(...)`, then `print(prof.table())`; and on
# the full-size UNet, `minriff bench unet --profile`.


def gelu_tanh(x):
    """GELU's tanh approximation (used by GPT-2 and torch's approximate='tanh')."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def geglu_tanh(x):
    """(..., 2F) -> (..., F): a · gelu_tanh(b) for the two halves (a, b) of the last axis."""
    a, b = np.split(x, 2, axis=-1)
    return (a * gelu_tanh(b)).astype(np.float32)


grid = np.linspace(-6, 6, 10001)
gelu_tanh_err = max_err(gelu_tanh(grid), ref.gelu(grid))
print(f"   gelu_tanh vs exact (erf) gelu on [-6, 6]: max |difference| {gelu_tanh_err:.1e}")


def relative_change(y):
    return float(np.linalg.norm(y - baseline) / np.linalg.norm(baseline))


# Swapping `gelu` alone does nothing to the UNet: its feed-forward calls the fused op `geglu`
# (a · gelu(b) in one pass). Knowing which op a model really calls is half of kernel work.
# Overrides nest: inside the inner block both replacements are active.
with kernels.override("cpu", "gelu", lambda x: gelu_tanh(x).astype(np.float32)):
    change_gelu_only = relative_change(unet(latents, 500, text))
    with kernels.override("cpu", "geglu", geglu_tanh):
        change_geglu = relative_change(unet(latents, 500, text))
restored = bool(np.array_equal(unet(latents, 500, text), baseline))
print(f"   UNet output, relative change with gelu -> tanh gelu : {change_gelu_only:.1e}")
print(f"   UNet output, relative change with geglu -> tanh geglu: {change_geglu:.1e}")
print(f"   after the with blocks, output bit-identical to before: {restored}")
# (`kernels.register` / `kernels.unregister` do the same without a block: the replacement stays
# until you unregister it.)

print("RESULT " + json.dumps({
    "op_max_err": op_errors, "attention_max_err": attention_errors, "gelu_tanh_max_err": gelu_tanh_err,
    "unet_change_gelu_only": change_gelu_only, "unet_change_geglu_tanh": change_geglu,
    "unet_restored_identical": restored, "unet_op_calls": calls,
}))
