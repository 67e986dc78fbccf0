"""minriff.rng without torch: committed torch streams, the Mersenne Twister itself, state handling."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minriff.errors import InputError
from minriff.rng import Generator, randn_tensor
from support import FIXTURES, fixture_script

MAKE = fixture_script("make_schedulers")
STREAM = np.load(FIXTURES / "rng" / "torch_stream.npz")


def _draw(gen, kind, shape, dtype):
    return getattr(gen, kind)(shape, dtype=np.dtype(dtype))


@pytest.mark.parametrize("path", ["avx2", "libm"])
@pytest.mark.parametrize("seed", MAKE.RNG_SEEDS)
def test_matches_committed_torch_stream(path, seed):
    """Successive calls on one generator (sizes < 16, = 16, ragged > 16, rand, float64) equal
    torch's values bit for bit, for both of torch's float32 normal_fill builds."""
    gen = Generator(seed, float_path=path)
    for k, (kind, shape, dtype) in enumerate(MAKE.RNG_CALLS):
        expected = STREAM[f"{path}_seed{seed}_call{k}"]
        got = _draw(gen, kind, shape, dtype)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.array_equal(got.view(np.uint8), expected.view(np.uint8)), (path, seed, k, kind, shape)


def test_mt19937_standard_check_value():
    """C++ [rand.predef]: the 10000th output of mt19937 with the default seed 5489 is 4123659995."""
    assert int(Generator(5489)._u32(10000)[-1]) == 4123659995


@given(st.integers(0, 2**32 - 1), st.integers(1, 1500))
def test_engine_equals_numpy_legacy_mt19937(seed, n):
    """NumPy's legacy RandomState(int) seeds the same init_genrand MT19937: same raw 32-bit stream."""
    expected = np.random.RandomState(seed).randint(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    ours = Generator(seed)
    got = np.concatenate([ours._u32(n // 2), ours._u32(n - n // 2)])  # split: position carries
    assert np.array_equal(got, expected)


def test_rand_is_24_bit_uniform_of_the_raw_stream():
    raw = Generator(3)._u32(100)
    expected = (raw & 0xFFFFFF).astype(np.float64) / 2**24
    got = Generator(3).rand(100)
    assert got.dtype == np.float32 and np.array_equal(got.astype(np.float64), expected)


def test_manual_seed_resets_stream_and_normal_cache():
    gen = Generator(11)
    first = [gen.randn(3), gen.randn(40), gen.rand(7)]
    gen.randn(1)  # leaves a cached Box-Muller partner behind
    gen.manual_seed(11)
    again = [gen.randn(3), gen.randn(40), gen.rand(7)]
    for a, b in zip(first, again):
        assert np.array_equal(a, b)


def test_scalar_path_cache_carries_across_calls():
    """Two scalar draws of 1 equal one draw of 2: the second value is the cached sin partner."""
    a = Generator(5)
    b = Generator(5)
    pair = a.randn(2)
    assert np.array_equal(np.concatenate([b.randn(1), b.randn(1)]), pair)


@given(st.integers(0, 2**31), st.lists(st.integers(1, 9), min_size=0, max_size=4))
def test_shapes_dtypes_and_ranges(seed, shape):
    gen = Generator(seed)
    x = gen.randn(shape)
    u = gen.rand(shape)
    assert x.shape == tuple(shape) and x.dtype == np.float32 and np.isfinite(x).all()
    assert u.shape == tuple(shape) and u.dtype == np.float32 and ((u >= 0) & (u < 1)).all()


def test_normal_statistics():
    x = Generator(0).randn((1, 4, 128, 128)).astype(np.float64)
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1) < 0.02
    y = Generator(0, float_path="libm").randn((1, 4, 128, 128)).astype(np.float64)
    assert np.abs(x - y).max() < 1e-5  # the two builds differ only in the last bits


def test_randn_tensor_single_vs_list_of_generators():
    shape = (2, 4, 3, 3)
    one = randn_tensor(shape, Generator(1))
    assert np.array_equal(one, Generator(1).randn(shape))
    per_item = randn_tensor(shape, [Generator(1), Generator(2)])
    assert np.array_equal(per_item[0], Generator(1).randn((1, 4, 3, 3))[0])
    assert np.array_equal(per_item[1], Generator(2).randn((1, 4, 3, 3))[0])
    assert np.array_equal(randn_tensor(shape, [Generator(1)]), one)
    with pytest.raises(InputError, match="3 generators for a batch of 2"):
        randn_tensor(shape, [Generator(1)] * 3)


@pytest.mark.parametrize("bad", [(-1, 2), "abc", (2.5,)])
def test_bad_shapes(bad):
    with pytest.raises(InputError):
        Generator(0).randn(bad)


def test_bad_seed_dtype_and_path():
    with pytest.raises(InputError, match="seed must be an integer"):
        Generator(1.5)
    with pytest.raises(InputError, match="64 bits"):
        Generator(2**64)
    with pytest.raises(InputError, match="float32 or float64"):
        Generator(0).randn(3, dtype=np.float16)
    with pytest.raises(InputError, match="float_path"):
        Generator(0, float_path="sse")


def test_seed_uses_low_32_bits_like_torch():
    assert np.array_equal(Generator(2**32 + 9).randn(20), Generator(9).randn(20))
    assert Generator(-1).initial_seed() == 2**64 - 1


_F32 = st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-(2.0**60), max_value=2.0**60)


@given(_F32, _F32, _F32)
def test_fma32_is_correctly_rounded(a, b, c):
    """The float32 fused multiply-add behind the AVX2 path: the result is the float32 nearest to the
    exact a*b + c (ties to even), checked against its two neighbours in exact rational arithmetic."""
    from fractions import Fraction

    from minriff.rng import fma32

    a, b, c = np.float32(a), np.float32(b), np.float32(c)
    r = fma32(np.array([a]), np.array([b]), np.array([c]))[0]
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    err = abs(Fraction(float(r)) - exact)
    for n in (np.nextafter(r, np.float32(np.inf)), np.nextafter(r, np.float32(-np.inf))):
        if np.isfinite(n):
            other = abs(Fraction(float(n)) - exact)
            assert err < other or (err == other and int(r.view(np.uint32)) % 2 == 0)


def test_fma32_double_rounding_case():
    """a*b + c = 1 + 2^-23 + 2^-24 - 2^-70 lies just below the tie between 1 + 2^-23 and 1 + 2^-22:
    the answer is 1 + 2^-23. A plain float64 sum would round to the tie, then to even: 1 + 2^-22."""
    from minriff.rng import fma32

    a = np.float32(2**-24 + 2**-47)
    b = np.float32(1 - 2**-23)
    c = np.float32(1 + 2**-23)
    naive = np.float32(float(a) * float(b) + float(c))
    assert naive == np.float32(1 + 2**-22)
    assert fma32(np.array([a]), np.array([b]), np.array([c]))[0] == np.float32(1 + 2**-23)
