"""The CUDA execution model as the emulator implements it, checked with the tiny kernels of
kernels/cuda/tests/emu_selftest.cu against NumPy. On a GPU host the same launches run on CuPy."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff.kernels.cuda import loader as L

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and not L.gpu_available(), reason="needs g++ or a GPU")
SELFTEST = L.HERE / "tests" / "emu_selftest.cu"


# fibers: the default; ucontext: the portable fiber switch; threads: one OS thread per CUDA thread
# with std::barrier (the variant for ThreadSanitizer). Each must implement the same semantics.
VARIANTS = {"fibers": {}, "ucontext": {"flags": ("-DMINRIFF_EMU_UCONTEXT",)}, "threads": {"threads": True}}


@pytest.fixture(scope="module", params=["gpu"] if L.gpu_available() else list(VARIANTS))
def mod(request):
    if request.param == "gpu":
        return L.CupyLoader(SELFTEST)
    return L.EmulatorLoader(SELFTEST, **VARIANTS[request.param])


def run(mod, name, grid, block, args, shared_mem=0):
    xp = getattr(mod, "xp", np)
    dev = [xp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    mod.get_function(name)(grid, block, dev, shared_mem=shared_mem)
    return [a.get() if hasattr(a, "get") else a for a in dev]


@settings(max_examples=15)
@given(grid=st.tuples(*[st.integers(1, 3)] * 3),
       block=st.tuples(st.integers(1, 9), st.integers(1, 4), st.integers(1, 3)))
def test_indices_and_shapes_in_x_y_z(mod, grid, block):
    nb, nt = np.prod(grid), np.prod(block)
    out = run(mod, "dims_probe", grid, block, [np.full(12 * nb * nt, -1, np.int32)])[0].reshape(
        grid[::-1] + block[::-1] + (12,))
    bz, by, bx, tz, ty, tx = np.meshgrid(*[np.arange(n) for n in grid[::-1] + block[::-1]], indexing="ij")
    for k, want in enumerate([tx, ty, tz, bx, by, bz]):
        np.testing.assert_array_equal(out[..., k], want)
    np.testing.assert_array_equal(out[..., 6:9].reshape(-1, 3), np.broadcast_to(block, (nb * nt, 3)))
    np.testing.assert_array_equal(out[..., 9:12].reshape(-1, 3), np.broadcast_to(grid, (nb * nt, 3)))


@pytest.mark.parametrize("rounds", [1, 5, 300])
def test_barrier_orders_shared_memory_rounds(mod, rounds):
    x = np.random.default_rng(rounds).standard_normal(3 * 256).astype(np.float32)
    y = run(mod, "rotate_rounds", 3, 256, [x, np.zeros_like(x), rounds])[1]
    np.testing.assert_array_equal(y.reshape(3, 256), np.roll(x.reshape(3, 256), -rounds, axis=1))


@pytest.mark.parametrize("n", [1, 32, 64, 512])
def test_shared_memory_is_per_block(mod, n):
    x = np.random.default_rng(n).integers(-50, 50, 7 * n).astype(np.float32)  # exact sums
    sums = run(mod, "block_sum", 7, n, [x, np.zeros(7, np.float32)])[1]
    np.testing.assert_array_equal(sums, x.reshape(7, n).sum(axis=1))


@pytest.mark.parametrize("n", [32, 96])
def test_shuffles_and_votes(mod, n):
    x = np.random.default_rng(n).integers(0, 40, n).astype(np.float32)
    out, votes = run(mod, "warp_ops", 1, n, [x, np.zeros(5 * n, np.float32), np.zeros(3 * n, np.uint32), 20])[1:3]
    out, votes = out.reshape(n, 5), votes.reshape(n, 3)
    lane = np.arange(n) % 32
    base = np.arange(n) - lane
    np.testing.assert_array_equal(out[:, 0], np.repeat(x.reshape(-1, 32).sum(1), 32))
    np.testing.assert_array_equal(out[:, 1], np.where(lane + 3 < 32, x[np.minimum(np.arange(n) + 3, n - 1)], x))
    np.testing.assert_array_equal(out[:, 2], np.where(lane >= 2, x[np.arange(n) - 2], x))
    np.testing.assert_array_equal(out[:, 3], x[base + 7])
    np.testing.assert_array_equal(out[:, 4], x[np.arange(n) ^ 1])
    p = (x > 20).reshape(-1, 32)
    ballots = (p * (1 << np.arange(32, dtype=np.uint64))).sum(1).astype(np.uint32)
    np.testing.assert_array_equal(votes[:, 0], np.repeat(ballots, 32))
    np.testing.assert_array_equal(votes[:, 1], np.repeat(p.all(1), 32))
    np.testing.assert_array_equal(votes[:, 2], np.repeat(p.any(1), 32))


def test_atomics_from_many_blocks(mod):
    n = 5000
    x = np.random.default_rng(0).integers(-8, 8, n).astype(np.float32)  # exact in any order
    total, count = run(mod, "atomic_sum", (n + 127) // 128, 128,
                       [x, np.zeros(1, np.float32), np.zeros(1, np.int32), n])[1:3]
    assert count[0] == n and total[0] == x.sum()


@pytest.mark.parametrize("n", [1, 33, 1024])
def test_dynamic_shared_memory(mod, n):
    x = np.arange(4 * n, dtype=np.float32)
    y = run(mod, "dyn_reverse", 4, n, [x, np.zeros_like(x)], shared_mem=4 * n)[1]
    np.testing.assert_array_equal(y.reshape(4, n), x.reshape(4, n)[:, ::-1])


def test_arguments_are_converted_by_c_type(mod):
    out = run(mod, "scalars", 1, 1, [np.zeros(5, np.float32), -3, 0.5, 7, 2**40, 1.25])[0]
    np.testing.assert_array_equal(out, [-3, 0.5, 7, 2.0**40, 1.25])


def test_bad_arguments_and_launches_are_refused(mod):
    f = mod.get_function("scalars")
    xp = getattr(mod, "xp", np)
    good = [xp.zeros(5, np.float32), 1, 0.5, 7, 1, 1.0]
    with pytest.raises(TypeError, match="float\\* but the array is float64"):
        f(1, 1, [xp.zeros(5)] + good[1:])
    with pytest.raises(OverflowError, match="does not fit a int"):
        f(1, 1, good[:1] + [2**31] + good[2:])
    with pytest.raises(TypeError, match="6 arguments expected"):
        f(1, 1, good[:3])
    with pytest.raises(L.LaunchError, match="1024 threads"):
        f(1, 2048, good)
    with pytest.raises(L.LaunchError, match="shared memory"):
        f(1, 1, good, shared_mem=64 * 1024)
    with pytest.raises(L.LaunchError, match="no kernel"):
        mod.get_function("nope")


def test_divergent_barrier_is_reported():
    if L.gpu_available():
        pytest.skip("undefined behaviour on a GPU: emulator-only check")
    m = L.EmulatorLoader(SELFTEST)
    with pytest.raises(L.LaunchError, match="divergent barrier"):
        m.get_function("divergent")(1, 64, [np.zeros(64, np.float32), 16])
    # and the emulator still works afterwards
    y = run(m, "dyn_reverse", 1, 8, [np.arange(8, dtype=np.float32), np.zeros(8, np.float32)], shared_mem=32)[1]
    np.testing.assert_array_equal(y, np.arange(8)[::-1])


def test_writing_past_dynamic_shared_memory_is_reported():
    if L.gpu_available():
        pytest.skip("emulator-only check (a GPU may fault or corrupt silently)")
    m = L.EmulatorLoader(SELFTEST)
    x = np.arange(64, dtype=np.float32)
    with pytest.raises(L.LaunchError, match="past the end of its dynamic shared memory"):
        m.get_function("dyn_reverse")(1, 64, [x, np.zeros_like(x)], shared_mem=4 * 32)
