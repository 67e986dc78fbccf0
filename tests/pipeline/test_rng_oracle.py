"""minriff.rng against torch's CPU generator, live (pytest -m oracle)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff.rng import Generator
from support import oracle

pytestmark = pytest.mark.oracle

CALL = st.tuples(st.sampled_from(["randn", "rand"]),
                 st.lists(st.integers(1, 40), min_size=0, max_size=3),
                 st.sampled_from(["float32", "float32", "float64"]))


def _torch_path(torch) -> str:
    """Which float32 normal_fill this torch runs: AVX2 kernels (also used by AVX-512 builds) or libm."""
    return "libm" if torch.backends.cpu.get_cpu_capability() == "DEFAULT" else "avx2"


@settings(max_examples=150)
@given(st.one_of(st.integers(0, 2**64 - 1), st.integers(-(2**63), -1)), st.lists(CALL, min_size=1, max_size=6))
def test_streams_equal_torch_bit_for_bit(seed, calls):
    torch = oracle("torch")
    gen_t = torch.Generator("cpu").manual_seed(seed)
    gen_m = Generator(seed, float_path=_torch_path(torch))
    for kind, shape, dtype in calls:
        expected = getattr(torch, kind)(shape, generator=gen_t, dtype=getattr(torch, dtype)).numpy()
        got = getattr(gen_m, kind)(shape, dtype=np.dtype(dtype))
        assert got.dtype == expected.dtype and got.shape == expected.shape
        same_bits = np.array_equal(got.reshape(-1).view(np.uint8), expected.reshape(-1).view(np.uint8))
        assert same_bits, (seed, kind, shape, dtype)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 - 1, 987654321])
def test_latent_sized_noise(seed):
    """The pipeline's draw: (1, 4, 64, 64) and a ragged (1, 4, 64, 53) width, then a second call."""
    torch = oracle("torch")
    gen_t = torch.Generator("cpu").manual_seed(seed)
    gen_m = Generator(seed, float_path=_torch_path(torch))
    for shape in [(1, 4, 64, 64), (1, 4, 64, 53), (2, 4, 8, 8)]:
        assert np.array_equal(gen_m.randn(shape), torch.randn(shape, generator=gen_t).numpy())


def test_default_seed_is_torchs():
    torch = oracle("torch")
    assert Generator().initial_seed() == torch.Generator("cpu").initial_seed()
    assert np.array_equal(Generator(float_path=_torch_path(torch)).randn(20),
                          torch.randn(20, generator=torch.Generator("cpu")).numpy())


def test_randn_tensor_like_diffusers():
    torch = oracle("torch")
    torch_utils = pytest.importorskip("diffusers.utils.torch_utils")
    from minriff.rng import randn_tensor

    path = _torch_path(torch)
    shape = (3, 4, 5, 6)
    for seeds in ([5], [5, 6, 7]):
        gens_t = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        gens_m = [Generator(s, float_path=path) for s in seeds]
        expected = torch_utils.randn_tensor(shape, generator=gens_t if len(seeds) > 1 else gens_t[0]).numpy()
        assert np.array_equal(randn_tensor(shape, gens_m), expected)
