"""Compile gates shared by the nvcc and NVRTC tests: parse a `ptxas -v` report and list what a
kernel must not do (spill registers, exceed 48 KB static shared memory, exceed the register budget)."""
from __future__ import annotations

import io
import re

STATIC_SHARED_LIMIT = 48 * 1024
REGISTER_BUDGET = 128  # per thread: at least two 256-thread blocks fit an SM's 64K registers
ARCHS = ("80", "90")


def parse_ptxas(report: str) -> dict[str, dict]:
    """{kernel: {registers, spill_stores, spill_loads, stack, smem}} from `ptxas -v` output."""
    out, cur = {}, None
    for line in report.splitlines():
        if m := re.search(r"Compiling entry function '(\w+)'", line):
            cur = out.setdefault(m.group(1),
                                 {"registers": 0, "spill_stores": 0, "spill_loads": 0, "stack": 0, "smem": 0})
        elif cur is not None and (m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                                                 r"(\d+) bytes spill loads", line)):
            cur["stack"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
        elif cur is not None and (m := re.search(r"Used (\d+) registers", line)):
            cur["registers"] = int(m.group(1))
            if s := re.search(r"(\d+) bytes smem", line):
                cur["smem"] = int(s.group(1))
    return out


def problems(report: dict[str, dict]) -> list[str]:
    bad = []
    for name, r in sorted(report.items()):
        if r["spill_stores"] or r["spill_loads"]:
            bad.append(f"{name} spills registers ({r['spill_stores']} B stores, {r['spill_loads']} B loads)")
        if r["smem"] > STATIC_SHARED_LIMIT:
            bad.append(f"{name} uses {r['smem']} B static shared memory (limit {STATIC_SHARED_LIMIT})")
        if r["registers"] > REGISTER_BUDGET:
            bad.append(f"{name} uses {r['registers']} registers (budget {REGISTER_BUDGET})")
    return bad


def describe(name: str, arch: str, r: dict) -> str:
    return (f"{name} sm_{arch}: {r['registers']} regs, {r['smem']} B static smem, {r['stack']} B stack, "
            f"{r['spill_stores']}/{r['spill_loads']} B spill st/ld")


def nvrtc_report(source: str, arch: str, options) -> dict[str, dict]:
    """Compile with NVRTC exactly as cupy.RawModule would for `arch` (no GPU needed) and return
    ptxas's report. Raises cupy's CompileException on errors."""
    from cupy.cuda import compiler

    # CuPy asks the current device for its arch; without a GPU, pin the one under test.
    pinned = compiler._get_arch_for_options_for_nvrtc
    compiler._get_arch_for_options_for_nvrtc = lambda arch=None: (f"-arch=sm_{arch}", "cubin")
    try:
        log = io.StringIO()
        # -ftz=true is what CuPy's RawModule adds to every compile
        compiler.compile_using_nvrtc(source, tuple(options) + ("-ftz=true", "--ptxas-options=-v"), arch=arch,
                                     log_stream=log)
        return parse_ptxas(log.getvalue())
    finally:
        compiler._get_arch_for_options_for_nvrtc = pinned
