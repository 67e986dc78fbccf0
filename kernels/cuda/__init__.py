"""The cuda backend of minriff.kernels: CUDA C kernels (this folder's `.cu` files) launched on
CuPy arrays through `cupy.RawModule` when a GPU is present; otherwise — or with
MINRIFF_CUDA_EMULATE=1 — the same kernels and launch code run on NumPy arrays through the CPU
emulator (emu/cuda_emu.h, compiled with g++). See README.md in this folder."""
from .ops import (  # noqa: F401
    EMULATED,
    asarray,
    attention,
    conv2d,
    geglu,
    gelu,
    group_norm,
    layer_norm,
    lincomb,
    linear,
    quick_gelu,
    silu,
    softmax,
    timestep_embedding,
    to_host,
    upsample_nearest2x,
    xp,
)
