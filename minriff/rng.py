"""A random generator that reproduces PyTorch's CPU generator bit for bit.

`Generator(seed).randn(shape)` gives the same float32 values as
`torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`, so a seed in minriff gives the
same initial noise as diffusers run with a CPU generator.

How PyTorch draws (facts read from ATen: MT19937RNGEngine.h, CPUGeneratorImpl.cpp,
DistributionsHelper.h, TransformationHelper.h, native/cpu/DistributionTemplates.h):
- Engine: the standard 32-bit Mersenne Twister seeded with `init_genrand(seed & 0xffffffff)`.
  `random()` is one 32-bit output; `random64()` is two, the first one in the high half.
- Uniform [0, 1): float32 = (random() & (2^24-1)) * 2^-24; float64 = (random64() & (2^53-1)) * 2^-53.
- Normal, fewer than 16 elements (or non-contiguous): per element a float64 Box-Muller,
  u1, u2 = two float64 uniforms; r = sqrt(-2 log1p(-u2)); theta = 2 pi u1; returns r cos(theta) and
  caches r sin(theta) in the generator for the next scalar draw (the cache survives across calls and
  is cleared by manual_seed); the result is cast to the tensor dtype.
- Normal, 16 or more contiguous elements ("normal_fill"): first one uniform of the tensor dtype per
  element; then each block of 16 becomes 8 Box-Muller pairs in the tensor dtype, with
  u1 = 1 - data[j], u2 = data[j+8], radius = sqrt(-2 log u1), theta = (dtype)(2 pi (double) u2),
  data[j] = radius cos theta, data[j+8] = radius sin theta. If size % 16 != 0, 16 fresh uniforms
  overwrite the last 16 slots and that last block is transformed again (size + 16 draws in total).
  The scalar-path cache is neither used nor touched.
- torch.rand: one uniform of the tensor dtype per element.
- Which Box-Muller runs for float32 depends on torch's CPU capability: on x86-64 with AVX2 or AVX-512
  torch uses `normal_fill_16_AVX2` (Cephes polynomial log/sincos from avx_mathfun.h, compiled with
  FMA contraction) — the default here, `float_path="avx2"`; with ATEN_CPU_CAPABILITY=default it
  uses libm logf/cosf/sinf — `float_path="libm"` (matches glibc's libm, which Numba calls). float64
  and the < 16 path do not depend on it.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from minriff.errors import InputError

# float32 randn of >= 16 elements: "avx2" = torch on x86-64 with AVX2 or AVX-512 (the usual case),
# "libm" = torch's generic build (ATEN_CPU_CAPABILITY=default, non-x86 builds use their own libm).
FLOAT_PATHS = ("avx2", "libm")

_N = 624
_M = 397
_TWO_PI = 2.0 * math.pi  # c10::pi<double> times 2, exact in double


@njit(cache=True)
def _mt_seed(seed, state):
    state[0] = np.uint32(seed & 0xFFFFFFFF)
    for j in range(1, _N):
        prev = np.uint64(state[j - 1])
        state[j] = np.uint32((np.uint64(1812433253) * (prev ^ (prev >> np.uint64(30))) + np.uint64(j))
                             & np.uint64(0xFFFFFFFF))


@njit(cache=True)
def _mt_twist(state):
    for i in range(_N):
        y = (state[i] & np.uint32(0x80000000)) | (state[(i + 1) % _N] & np.uint32(0x7FFFFFFF))
        v = state[(i + _M) % _N] ^ (y >> np.uint32(1))
        if state[(i + 1) % _N] & np.uint32(1):
            v ^= np.uint32(0x9908B0DF)
        state[i] = v


@njit(cache=True)
def _mt_draw(state, pos, out):
    """Fill `out` (uint32) with the next outputs; return the new position in the state block."""
    for k in range(out.shape[0]):
        if pos >= _N:
            _mt_twist(state)
            pos = 0
        y = state[pos]
        pos += 1
        y ^= y >> np.uint32(11)
        y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
        y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
        y ^= y >> np.uint32(18)
        out[k] = y
    return pos


@njit(cache=True)
def _box_muller_blocks_f32(data):
    """In place: each block of 16 uniforms -> 16 normals (torch's float normal_fill_16)."""
    one = np.float32(1.0)
    minus_two = np.float32(-2.0)
    for start in range(0, data.shape[0] - 15, 16):
        for j in range(8):
            u1 = one - data[start + j]
            u2 = data[start + j + 8]
            radius = math.sqrt(minus_two * math.log(u1))
            theta = np.float32(_TWO_PI * np.float64(u2))
            data[start + j] = radius * math.cos(theta)
            data[start + j + 8] = radius * math.sin(theta)


@njit(cache=True)
def _box_muller_blocks_f64(data):
    for start in range(0, data.shape[0] - 15, 16):
        for j in range(8):
            u1 = 1.0 - data[start + j]
            u2 = data[start + j + 8]
            radius = math.sqrt(-2.0 * math.log(u1))
            theta = _TWO_PI * u2
            data[start + j] = radius * math.cos(theta)
            data[start + j + 8] = radius * math.sin(theta)


# --- torch's AVX2 normal_fill: avx_mathfun.h polynomials, float32 lane arithmetic -----------------
# GCC builds these intrinsics with FMA contraction (-ffp-contract=fast): every `mul` whose result feeds
# one `add`/`sub` becomes a fused multiply-add. Where both operands of the add are products, the
# first one is fused (checked bit for bit against torch on an AVX-512 machine).

def fma32(a, b, c):
    """Correctly rounded float32 a*b + c, elementwise. The product is exact in float64; the sum is
    rounded to odd in float64, so the final rounding to float32 is not a double rounding."""
    p = np.asarray(a, np.float32).astype(np.float64) * np.asarray(b, np.float32).astype(np.float64)
    c = np.asarray(c, np.float32).astype(np.float64)
    s = p + c
    back = s - p
    err = (p - (s - back)) + (c - back)  # exact: p + c == s + err
    bits = s.view(np.int64)
    nudge = (err != 0) & ((bits & 1) == 0)
    step = np.where((err > 0) == (s > 0), 1, -1)
    return np.where(nudge, bits + step, bits).view(np.float64).astype(np.float32)


_F = np.float32


def _avx_log(x):
    """log256_ps for x in (0, 1] (no denormal or invalid inputs reach it from normal_fill)."""
    bits = x.view(np.int32)
    e = ((bits >> 23) - 0x7F).astype(np.float32) + _F(1.0)
    x = ((bits & ~0x7F800000) | np.float32(0.5).view(np.int32)).view(np.float32)  # mantissa in [0.5, 1)
    below = x < _F(0.707106781186547524)
    tmp = np.where(below, x, _F(0.0))
    x = x - _F(1.0)
    e = e - np.where(below, _F(1.0), _F(0.0))
    x = x + tmp
    z = x * x
    y = np.full_like(x, _F(7.0376836292e-2))
    for coef in (-1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
                 -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1):
        y = fma32(y, x, _F(coef))
    y = y * x
    y = fma32(y, z, e * _F(-2.12194440e-4))
    y = fma32(-z, _F(0.5), y)
    return fma32(e, _F(0.693359375), x + y)


def _avx_sincos(x):
    """sincos256_ps for x >= 0 (theta = 2 pi u2)."""
    j = (x * _F(1.27323954473516)).astype(np.int32)  # cvttps: truncation
    j = (j + 1) & ~1
    y = j.astype(np.float32)
    swap_sin = ((j & 4) << 29).astype(np.uint32)
    sin_poly = (j & 2) == 0
    sign_cos = ((~(j - 2) & 4) << 29).astype(np.uint32)
    x = fma32(y, _F(-0.78515625), x)
    x = fma32(y, _F(-2.4187564849853515625e-4), x)
    x = fma32(y, _F(-3.77489497744594108e-8), x)
    z = x * x
    c = fma32(_F(2.443315711809948e-5), z, _F(-1.388731625493765e-3))
    c = fma32(c, z, _F(4.166664568298827e-2))
    c = c * z
    c = fma32(c, z, -(z * _F(0.5))) + _F(1.0)
    s = fma32(_F(-1.9515295891e-4), z, _F(8.3321608736e-3))
    s = fma32(s, z, _F(-1.6666654611e-1))
    s = s * z
    s = fma32(s, x, x)
    sin = np.where(sin_poly, s, c)
    cos = np.where(sin_poly, c, s)
    sin = (sin.view(np.uint32) ^ swap_sin).view(np.float32)
    cos = (cos.view(np.uint32) ^ sign_cos).view(np.float32)
    return sin, cos


def _box_muller_blocks_avx2(data):
    """In place, like torch's normal_fill_16_AVX2 over every full block of 16."""
    n_full = data.shape[0] // 16 * 16
    blocks = data[:n_full].reshape(-1, 2, 8)  # (blocks, [u1 lanes, u2 lanes], 8)
    u1 = _F(1.0) - blocks[:, 0]
    theta = _F(2.0 * math.pi) * blocks[:, 1]
    radius = np.sqrt(_F(-2.0) * _avx_log(u1))
    sin, cos = _avx_sincos(theta)
    blocks[:, 0] = radius * cos
    blocks[:, 1] = radius * sin


def _shape_tuple(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        dims = tuple(shape)
    except TypeError:
        dims = (shape,)
    if isinstance(shape, (str, bytes)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise InputError(f"random shape must be an int or a sequence of ints, got {shape!r}")
    dims = tuple(int(d) for d in dims)
    if any(d < 0 for d in dims):
        raise InputError(f"random shape must not have negative sizes, got {dims}")
    return dims


def _check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise InputError(f"random dtype must be float32 or float64, got {dtype}")
    return dtype


class Generator:
    """PyTorch-compatible CPU generator: `Generator(seed).randn((1, 4, 64, 64))`."""

    def __init__(self, seed: int = 67280421310721, float_path: str = "avx2"):
        # the default seed is torch's default_rng_seed_val, what an unseeded torch.Generator() uses
        if float_path not in FLOAT_PATHS:
            raise InputError(f"float_path must be one of {', '.join(FLOAT_PATHS)}, got {float_path!r}")
        self.float_path = float_path
        self._state = np.empty(_N, dtype=np.uint32)
        self.manual_seed(seed)

    def manual_seed(self, seed: int) -> Generator:
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise InputError(f"seed must be an integer, got {seed!r}")
        seed = int(seed)
        if not -(2**63) <= seed < 2**64:
            raise InputError(f"seed must fit in 64 bits, got {seed}")
        # torch stores the seed as uint64; only the low 32 bits reach the engine
        self._seed = seed % 2**64
        _mt_seed(np.uint64(self._seed & 0xFFFFFFFF), self._state)
        self._pos = _N
        self._cached_normal: float | None = None
        return self

    def initial_seed(self) -> int:
        return self._seed

    # raw draws -------------------------------------------------------------------------------
    def _u32(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.uint32)
        self._pos = _mt_draw(self._state, self._pos, out)
        return out

    def _uniform(self, n: int, dtype: np.dtype) -> np.ndarray:
        if dtype == np.float32:
            bits = self._u32(n) & np.uint32(0xFFFFFF)
            return bits.astype(np.float32) * np.float32(2.0**-24)
        pairs = self._u32(2 * n).astype(np.uint64).reshape(n, 2)
        bits = ((pairs[:, 0] << np.uint64(32)) | pairs[:, 1]) & np.uint64(2**53 - 1)
        return bits.astype(np.float64) * 2.0**-53

    def _scalar_normal(self) -> float:
        if self._cached_normal is not None:
            value, self._cached_normal = self._cached_normal, None
            return value
        u1, u2 = self._uniform(2, np.dtype(np.float64))
        radius = math.sqrt(-2.0 * math.log1p(-float(u2)))
        theta = _TWO_PI * float(u1)
        self._cached_normal = radius * math.sin(theta)
        return radius * math.cos(theta)

    # public draws ----------------------------------------------------------------------------
    def randn(self, shape, dtype=np.float32) -> np.ndarray:
        """Standard normal samples, as `torch.randn(shape, generator=g, dtype=dtype)`."""
        dims = _shape_tuple(shape)
        dtype = _check_dtype(dtype)
        size = math.prod(dims)
        if size < 16:
            flat = np.array([self._scalar_normal() for _ in range(size)], dtype=np.float64).astype(dtype)
            return flat.reshape(dims)
        data = self._uniform(size, dtype)
        if dtype == np.float64:
            fill = _box_muller_blocks_f64
        else:
            fill = _box_muller_blocks_avx2 if self.float_path == "avx2" else _box_muller_blocks_f32
        fill(data)
        if size % 16:
            tail = self._uniform(16, dtype)
            fill(tail)
            data[size - 16:] = tail
        return data.reshape(dims)

    def rand(self, shape, dtype=np.float32) -> np.ndarray:
        """Uniform samples in [0, 1), as `torch.rand(shape, generator=g, dtype=dtype)`."""
        dims = _shape_tuple(shape)
        dtype = _check_dtype(dtype)
        return self._uniform(math.prod(dims), dtype).reshape(dims)


def randn_tensor(shape, generator: Generator | list[Generator], dtype=np.float32) -> np.ndarray:
    """diffusers' `randn_tensor` for CPU generators: one call for the full shape with a single
    generator; with a list of generators (one per batch item) each draws a (1, ...) sample."""
    dims = _shape_tuple(shape)
    if isinstance(generator, (list, tuple)):
        if len(generator) == 1:
            return generator[0].randn(dims, dtype)
        if len(generator) != dims[0]:
            raise InputError(f"got {len(generator)} generators for a batch of {dims[0]}")
        return np.concatenate([g.randn((1,) + dims[1:], dtype) for g in generator], axis=0)
    return generator.randn(dims, dtype)
