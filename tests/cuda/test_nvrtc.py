"""Compile gate through NVRTC, the compiler cupy.RawModule uses, with CuPy's own options, for
sm_80 and sm_90 — no GPU needed. Skips where cupy (cupy-cuda12x + nvidia-cuda-nvrtc-cu12, not a
minriff dependency) is not installed. Catches what nvcc forgives (e.g. INFINITY is undefined)."""
from __future__ import annotations

import pytest

from minriff.kernels.cuda import gates, loader

cupy = pytest.importorskip("cupy", reason="cupy not installed (pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12)")
SOURCES = sorted(loader.HERE.glob("*.cu")) + sorted((loader.HERE / "tests").glob("*.cu"))


def _nvrtc_or_skip():
    try:
        from cupy.cuda import nvrtc
        return nvrtc.getVersion()
    except Exception as e:  # cupy without the NVRTC runtime library
        pytest.skip(f"NVRTC not loadable: {e}")


@pytest.mark.parametrize("arch", gates.ARCHS)
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_nvrtc_builds_as_cupy_would_without_spills(src, arch):
    _nvrtc_or_skip()
    source, _ = loader.source_of(src)
    report = gates.nvrtc_report(source, arch, loader.CupyLoader.OPTIONS)
    assert set(report) == set(loader.signature.parse(source))
    for name, r in sorted(report.items()):
        print("nvrtc", src.name, gates.describe(name, arch, r))
    assert not gates.problems(report), f"{src.name} on sm_{arch}: {gates.problems(report)}"


def test_nvrtc_refuses_infinity_which_nvcc_accepts():
    _nvrtc_or_skip()
    from cupy.cuda.compiler import CompileException
    with pytest.raises(CompileException, match="INFINITY"):
        gates.nvrtc_report('extern "C" __global__ void f(float* y) { y[0] = INFINITY; }', "80", ())
