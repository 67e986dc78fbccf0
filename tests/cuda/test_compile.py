"""Compile gates for every `.cu` file: PTX from `nvcc -ptx` for sm_80 and sm_90, then ptxas's
resource report for that PTX. Fails on register spills, > 48 KB static shared memory or more
registers than the budget. Skips cleanly where nvcc is absent (CI here has it).

NVRTC, the compiler CuPy actually uses, is checked by test_cuda_nvrtc.py (needs cupy)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from minriff.kernels.cuda import loader
from minriff.kernels.cuda.gates import describe, parse_ptxas, problems

KERNEL_DIR = loader.HERE
SOURCES = sorted(KERNEL_DIR.glob("*.cu")) + sorted((KERNEL_DIR / "tests").glob("*.cu"))
ARCHS = ("sm_80", "sm_90")


def _tool(name):
    found = shutil.which(name)
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda", "/usr/local/cuda-13.0"):
        if root and (Path(root) / "bin" / name).exists():
            return str(Path(root) / "bin" / name)
    return None


NVCC, PTXAS = _tool("nvcc"), _tool("ptxas")
needs_nvcc = pytest.mark.skipif(NVCC is None or PTXAS is None, reason="nvcc/ptxas not installed")


def compile_report(src: Path, arch: str, tmp: Path) -> dict[str, dict]:
    ptx = tmp / f"{src.stem}-{arch}.ptx"
    r = subprocess.run([NVCC, "-ptx", f"-arch={arch}", "-I", str(KERNEL_DIR), "-o", str(ptx), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"nvcc -ptx {src.name} for {arch} failed:\n{r.stderr}"
    assert "warning" not in r.stderr.lower(), f"nvcc warnings in {src.name}:\n{r.stderr}"
    r = subprocess.run([PTXAS, "-v", f"-arch={arch}", "-o", str(tmp / f"{src.stem}-{arch}.cubin"), str(ptx)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"ptxas {src.name} for {arch} failed:\n{r.stderr}"
    return parse_ptxas(r.stderr + r.stdout)


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_nvcc_ptx_builds_without_spills_within_budgets(src, arch, tmp_path):
    report = compile_report(src, arch, tmp_path)
    kernels = set(loader.signature.parse(src.read_text()))
    assert set(report) == kernels, f"ptxas saw {sorted(report)}, the source declares {sorted(kernels)}"
    for name, r in sorted(report.items()):
        print(src.name, describe(name, arch[3:], r))
    assert not problems(report), f"{src.name} on {arch}: {problems(report)}"


def test_ptxas_report_parser_catches_what_the_gate_refuses():
    sample = """ptxas info    : Compiling entry function 'big' for 'sm_80'
ptxas info    : Function properties for big
    24 bytes stack frame, 16 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 49280 bytes smem, 400 bytes cmem[0]
ptxas info    : Compiling entry function 'ok' for 'sm_80'
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 20 registers, used 1 barriers, 128 bytes smem"""
    report = parse_ptxas(sample)
    assert report["big"] == {"registers": 255, "spill_stores": 16, "spill_loads": 8, "stack": 24, "smem": 49280}
    assert report["ok"] == {"registers": 20, "spill_stores": 0, "spill_loads": 0, "stack": 0, "smem": 128}
    assert len(problems(report)) == 3 and all(p.startswith("big ") for p in problems(report))


@needs_nvcc
def test_ptxas_rejects_over_48k_static_shared_memory(tmp_path):
    """The fact the gate rests on: a kernel over the static limit does not build at all."""
    src = tmp_path / "too_big.cu"
    src.write_text('extern "C" __global__ void too_big(float* y) {\n'
                   "    __shared__ float s[12320];  // 49,280 B\n"
                   "    s[threadIdx.x] = y[threadIdx.x];\n    __syncthreads();\n"
                   "    y[threadIdx.x] = s[12319 - threadIdx.x];\n}\n")
    with pytest.raises(AssertionError, match="ptxas"):
        compile_report(src, "sm_80", tmp_path)


def test_kernel_files_have_no_emulator_ifdefs_and_no_nvrtc_traps():
    for src in SOURCES:
        text = src.read_text()
        assert "MINRIFF_EMU" not in text and "__CUDA_ARCH__" not in text, f"{src.name}: emulator-specific code"
        assert not re.search(r"\bINFINITY\b", text), f"{src.name}: INFINITY is undefined under NVRTC"
        assert not re.search(r"#include\s*<", text), f"{src.name}: system headers are unavailable under NVRTC"
