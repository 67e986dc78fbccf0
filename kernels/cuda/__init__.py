"""The cuda backend of minriff.kernels: CUDA C kernels (this folder's `.cu` files) launched on
CuPy arrays through `cupy.RawModule` when a GPU is present; otherwise — or with
MINRIFF_CUDA_EMULATE=1 — the same kernels and launch code run on NumPy arrays through the CPU
emulator (emu/cuda_emu.h, compiled with g++). The ops are the public functions of ops.py (found by
name, like every backend's). See README.md in this folder."""
from minriff.kernels.cuda.ops import EMULATED, asarray, lincomb, to_host, xp  # noqa: F401
