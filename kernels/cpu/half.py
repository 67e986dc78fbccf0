"""float16 weights on the CPU: parameters may be held as IEEE half floats (half the memory) and
are widened to float32 where an op uses them; every computation stays float32.

Numba has no float16 type on the CPU, so kernels see a float16 array as its raw bits (a uint16
view, `bits_or_float32`) and widen each value with `widen(v)`: for uint16 bits it is LLVM's
`fpext half -> float` (one vcvtph2ps instruction per 16 values with F16C/AVX-512, exact for every
value; signalling NaNs come out quiet), for a float32 value it does nothing. So one kernel source
serves float32 and float16 weights, compiled once per dtype.

Where an op copies or transforms its weights anyway (the Winograd filter transform, the conv taps
reordering) the widening happens in that pass, for free. Elsewhere (linear layers, 1x1 and im2col
convs: BLAS wants float32 operands) `as_float32` widens the whole weight per call into a
per-thread workspace buffer: measured 3-4.6 Gelem/s on one core here, the speed of a float32
memcpy of the result; numpy's own `astype` ran at 0.4-0.7 Gelem/s."""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from minriff.kernels.cpu.workspace import buffer


@intrinsic
def _half_bits_to_float32(typingctx, bits):
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


def widen(v):
    """In Numba kernels: a weight value as float32 (float16 bits given as uint16, or a float)."""
    raise NotImplementedError("widen is for Numba kernels")


@overload(widen, inline="always")
def _widen(v):
    if isinstance(v, types.Integer) and v.bitwidth == 16 and not v.signed:
        return lambda v: _half_bits_to_float32(v)
    if isinstance(v, types.Float):
        return lambda v: np.float32(v)
    return None


@njit(cache=True, error_model="numpy", nogil=True)
def widen_flat(bits, out):
    """out[i] = bits[i] read as float16, widened (1-D, same length). One thread: it runs at memory
    speed (13 M values: 6.8 ms of CPU on one core, 15 ms wall on the shared machine), while a
    prange version took 14 ms of CPU and 39 ms wall, the OpenMP pool handing over to BLAS's."""
    for i in range(bits.size):
        out[i] = _half_bits_to_float32(bits[i])


def is_half(a) -> bool:
    return getattr(a, "dtype", None) == np.float16


def bits_or_float32(w) -> np.ndarray:
    """A weight for kernels that widen as they read: C-contiguous float32, or the uint16 bits of a
    float16 array (a view, no copy when it is contiguous). Other dtypes become float32."""
    if is_half(w):
        return np.ascontiguousarray(w).view(np.uint16)
    a = np.asarray(w, dtype=np.float32)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def as_float32(w, scratch: str | None = None) -> np.ndarray:
    """A weight as C-contiguous float32 for BLAS: float32 arrays as they are; float16 (or its
    uint16 bits from `bits_or_float32`) widened, into the calling thread's workspace buffer
    `scratch` when given (valid until that thread's next use of the name), else a new array."""
    if not (is_half(w) or getattr(w, "dtype", None) == np.uint16):
        a = np.asarray(w, dtype=np.float32)
        return a if a.flags.c_contiguous else np.ascontiguousarray(a)
    bits = np.ascontiguousarray(w).view(np.uint16)
    out = (buffer(scratch, bits.size) if scratch else np.empty(bits.size, np.float32)).reshape(bits.shape)
    if bits.size:
        widen_flat(bits.reshape(-1), out.reshape(-1))
    return out
