"""Scalar float32 math for the Numba kernels, written so LLVM can vectorise the loops that use
it (libm's expf/erff are scalar calls and would dominate every elementwise kernel).

exp2f/expf: Cody-Waite range reduction to r in [-0.5, 0.5] and a degree-7 Taylor polynomial of
2**r (relative error ~2e-8, below float32 rounding), scaled by 2**n built from the exponent bits.
Inputs below -126 (log2 domain) give exactly 0, so -inf masks work."""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _int32_bits_as_float32(typingctx, i):
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


# Flags for kernels using these functions: FMA contraction (deterministic for a given build) and
# no signed-zero care; together they make the elementwise loops ~1.7x faster.
_FMA = {"contract", "nsz"}

_LN2 = math.log(2.0)
# Taylor coefficients of 2**r = exp(r ln2): (ln2)^k / k!
_C = [np.float32(_LN2**k / math.factorial(k)) for k in range(8)]
C0, C1, C2, C3, C4, C5, C6, C7 = _C
LOG2E = np.float32(1.0 / _LN2)
E0, E1, E2, E3, E4, E5, E6, E7 = [np.float32(1.0 / math.factorial(k)) for k in range(8)]
LN2_HI = np.float32(0.693145751953125)  # ln2 with 12 trailing zero bits: n * LN2_HI is exact
LN2_LO = np.float32(_LN2 - 0.693145751953125)


@njit(inline="always", cache=True, error_model="numpy")
def exp2f(x):
    """2**x for float32 x; 0 below 2**-126, clamped to 2**127.99 above."""
    x = min(x, np.float32(127.99))
    xc = max(x, np.float32(-126.0))
    n = np.floor(xc + np.float32(0.5))
    r = xc - n  # [-0.5, 0.5], exact
    p = C7
    p = p * r + C6
    p = p * r + C5
    p = p * r + C4
    p = p * r + C3
    p = p * r + C2
    p = p * r + C1
    p = p * r + C0
    scale = _int32_bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))
    return np.float32(0.0) if x < np.float32(-126.0) else p * scale


@njit(inline="always", cache=True, error_model="numpy")
def expf(x):
    """e**x for float32 x: n = round(x / ln2), r = x - n ln2 in two parts (Cody-Waite), so the
    reduction adds no error; 0 below -87.3."""
    x = min(x, np.float32(88.7))
    xc = max(x, np.float32(-87.3))
    n = np.floor(xc * LOG2E + np.float32(0.5))
    r = (xc - n * LN2_HI) - n * LN2_LO  # [-0.35, 0.35]
    p = E7
    p = p * r + E6
    p = p * r + E5
    p = p * r + E4
    p = p * r + E3
    p = p * r + E2
    p = p * r + E1
    p = p * r + E0
    scale = _int32_bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))
    return np.float32(0.0) if x < np.float32(-87.3) else p * scale


@njit(inline="always", cache=True, error_model="numpy")
def sigmoidf(x):
    return np.float32(1.0) / (np.float32(1.0) + expf(-x))
