"""Scalar float32 math for the Numba kernels, written so LLVM can vectorise the loops that use
it (libm's expf/erff are scalar calls and would dominate every elementwise kernel).

exp2f: 2**x = 2**n * 2**r with n = round(x), r in [-0.5, 0.5] and a degree-5 polynomial for 2**r
(relative error 2.3e-7, two float32 ulps); expf: Cody-Waite reduction by ln2 and a degree-7
Taylor polynomial for e**r. Both ~1e-7 relative (about one float32 ulp); n is rounded and 2**n
built from the exponent bits with one add (SHIFTER below). Inputs below the normal range give
exactly 0, so -inf masks work.

Caution when editing: these are inlined into kernels in other modules, and Numba's on-disk cache
checks only each kernel's own source file, so after changing this file delete the cache
(kernels/cpu/__pycache__/*.nbi, *.nbc) or the other modules keep the old code."""
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


@intrinsic
def _float32_bits_as_int32(typingctx, x):
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def prefer_wide_vectors(typingctx):
    """Call first thing in a kernel: lets LLVM's vectoriser use 512-bit registers in it. On CPUs
    with AVX-512 LLVM defaults to 256-bit (a caution from older chips that slowed their clock for
    512-bit code); for the compute-bound exp loops 512-bit is measured ~1.35x faster here. It
    only tunes the vector width: on CPUs without AVX-512 nothing changes, and results are the same
    either way (same operations per element)."""
    def codegen(context, builder, signature, args):
        try:  # a string attribute: bypasses the keyword check of llvmlite's FunctionAttributes
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except Exception:  # another llvmlite: keep LLVM's default width rather than fail
            pass
        return context.get_dummy_value()

    return types.void(), codegen


# Flags for kernels using these functions: FMA contraction (deterministic for a given build) and
# no signed-zero care; together they make the elementwise loops ~1.7x faster.
FMA_FLAGS = {"contract", "nsz"}

_LN2 = math.log(2.0)


def _exp2_coefficients(degree: int) -> list:
    """Power-basis coefficients of the Chebyshev interpolant of 2**r on [-0.5, 0.5]: near-minimax,
    relative error 1.7e-7 at degree 5 (2.3e-7 after float32 Horner rounding)."""
    from numpy.polynomial import chebyshev

    nodes = 0.5 * np.cos(np.pi * (np.arange(64) + 0.5) / 64)
    cheb = chebyshev.chebfit(2 * nodes, 2.0**nodes, degree)  # in t = 2r, t in [-1, 1]
    return [np.float32(c) for c in chebyshev.cheb2poly(cheb) * 2.0 ** np.arange(degree + 1)]


C0, C1, C2, C3, C4, C5 = _exp2_coefficients(5)
LOG2E = np.float32(1.0 / _LN2)
E0, E1, E2, E3, E4, E5, E6, E7 = [np.float32(1.0 / math.factorial(k)) for k in range(8)]
LN2_HI = np.float32(0.693145751953125)  # ln2 with 12 trailing zero bits: n * LN2_HI is exact
LN2_LO = np.float32(_LN2 - 0.693145751953125)
# x + 1.5·2^23 rounds x to an integer n in the low mantissa bits; the +127 there is the exponent
# bias, so bits(t) << 23 is already 2**n. Cheaper than rint + convert + add. n itself is taken
# from the bits as an integer, so that no float expression (x + SHIFTER) - SHIFTER exists for
# fastmath "reassoc" to fold to x: exp2f stays exact under the attention kernel's flags.
SHIFTER = np.float32(1.5 * 2**23 + 127)
SHIFTER_BITS = np.int32(0x4B400000 + 127)


@njit(inline="always", cache=True, error_model="numpy")
def exp2f(x):
    """2**x for float32 x; 0 below -126.5 (the clamp at -127 gives exponent bits 0), inf above
    127.5 (n = 128 has no finite exponent; 2**127.5 is 70% of the largest float32)."""
    xc = max(min(x, np.float32(127.99)), np.float32(-127.0))
    bits = _float32_bits_as_int32(xc + SHIFTER)
    r = xc - np.float32(np.int32(bits - SHIFTER_BITS))  # [-0.5, 0.5], exact; int32 ops (Numba widens to int64)
    p = C5
    p = p * r + C4
    p = p * r + C3
    p = p * r + C2
    p = p * r + C1
    p = p * r + C0
    return p * _int32_bits_as_float32(bits << np.int32(23))


@njit(inline="always", cache=True, error_model="numpy")
def expf(x):
    """e**x for float32 x: n = round(x / ln2) by the SHIFTER trick, r = x - n ln2 in two parts
    (Cody-Waite), so the reduction adds no error. Exactly 0 below -88 (exponent bits 0; values
    between -88 and -87.3 come out as tiny normals or 0), inf above 88.38 (n = 128). Not for
    kernels compiled with "reassoc", which may merge the two-part reduction (3e-7 error)."""
    xc = max(min(x, np.float32(88.7)), np.float32(-88.0))
    bits = _float32_bits_as_int32(xc * LOG2E + SHIFTER)
    n = np.float32(np.int32(bits - SHIFTER_BITS))
    r = (xc - n * LN2_HI) - n * LN2_LO  # [-0.35, 0.35]
    p = E7
    p = p * r + E6
    p = p * r + E5
    p = p * r + E4
    p = p * r + E3
    p = p * r + E2
    p = p * r + E1
    p = p * r + E0
    return p * _int32_bits_as_float32(bits << np.int32(23))


@njit(inline="always", cache=True, error_model="numpy")
def sigmoidf(x):
    return np.float32(1.0) / (np.float32(1.0) + expf(-x))


# erfc(z) = t·exp(-z² + P(t)), t = 1/(1 + z/2), z >= 0: the Chebyshev-fitted form published in
# Numerical Recipes ("erfcc"), relative error < 1.2e-7 for all z >= 0 (checked against
# scipy.special.erfc in tests/kernels/test_cpu.py). Vectorisable, unlike libm's erfcf.
_ERFC = [np.float32(c) for c in (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
                                  0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)]
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9 = _ERFC


@njit(inline="always", cache=True, error_model="numpy")
def erfcf(x):
    z = abs(x)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(0.5) * z)
    p = R9
    p = p * t + R8
    p = p * t + R7
    p = p * t + R6
    p = p * t + R5
    p = p * t + R4
    p = p * t + R3
    p = p * t + R2
    p = p * t + R1
    p = p * t + R0
    r = t * expf(p - z * z)
    return r if x >= 0 else np.float32(2.0) - r


@njit(cache=True, error_model="numpy", nogil=True)
def row_max(s, i, n):
    """max(s[i, :n]) of a 2-D array, with 8 independent running maxima: LLVM does not vectorise a
    float max reduction written as one chain (without the no-NaN flag), and the chain's compare
    latency then costs ~1.5 ns per element. Exact either way, max does not round."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = s[i, 0]
    j = 0
    while j + 8 <= n:
        m0, m1, m2, m3 = max(m0, s[i, j]), max(m1, s[i, j + 1]), max(m2, s[i, j + 2]), max(m3, s[i, j + 3])
        m4, m5, m6, m7 = max(m4, s[i, j + 4]), max(m5, s[i, j + 5]), max(m6, s[i, j + 6]), max(m7, s[i, j + 7])
        j += 8
    m = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for jj in range(j, n):
        m = max(m, s[i, jj])
    return m
