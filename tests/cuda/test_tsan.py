"""The emulator's OS-thread variant (MINRIFF_EMU_THREADS) under ThreadSanitizer: a missing
__syncthreads is reported as a data race at its line, and the real kernels (block reductions,
attention's shared tiles and warp exchanges) run race-free. Standalone binaries: a TSan library
cannot be loaded into a Python process that was not started with the TSan runtime."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from minriff.kernels.cuda import loader

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")

RACY = """extern "C" __global__ void shift(const float* x, float* y, int sync) {
    __shared__ float buf[64];
    unsigned t = threadIdx.x;
    buf[t] = x[t];
    if (sync) __syncthreads();
    y[t] = buf[(t + 1) % blockDim.x];
}
"""

DRIVER = """
#include <vector>
static std::vector<float> data(size_t n, float scale) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = scale * float((i * 7919) % 97) / 97.0f - 0.5f * scale;
    return v;
}
template <class... A> static void go(int (*launch)(const unsigned*, size_t, void**), std::vector<unsigned> dims,
                                     size_t shmem, A... a) {
    void* args[] = {&a...};
    if (launch(dims.data(), shmem, args)) { std::printf("launch error: %s\\n", emu_last_error()); std::exit(3); }
}
int main(int argc, char** argv) {
@BODY@
    std::printf("done\\n");
    return 0;
}
"""


def build(tmp_path, name, source, body):
    src = tmp_path / f"{name}.cu"
    src.write_text(source)
    text, path = loader.source_of(src)
    tu = loader.emulator_source(text, path, loader.signature.parse(text)) + DRIVER.replace("@BODY@", body)
    cpp = tmp_path / f"{name}.cpp"
    cpp.write_text(tu)
    exe = tmp_path / name
    cmd = ["g++", "-std=c++20", "-O1", "-g", "-fsanitize=thread", "-DMINRIFF_EMU_THREADS", "-pthread",
           "-include", str(loader.EMU_HEADER), str(cpp), "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode and "tsan" in r.stderr.lower():
        pytest.skip(f"ThreadSanitizer unavailable: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    return exe


def run(exe, *argv):
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=0 exitcode=0")
    r = subprocess.run([str(exe), *argv], capture_output=True, text=True, env=env, timeout=300)
    assert "done" in r.stdout, r.stdout + r.stderr[-3000:]
    return r.stderr


def test_missing_syncthreads_is_reported_at_its_line(tmp_path):
    body = """    auto x = data(64, 1.0f), y = data(64, 0.0f);
    const float* xp = x.data(); float* yp = y.data();
    go(emu_launch_shift, {1, 1, 1, 64, 1, 1}, 0, xp, yp, argc > 1 ? 1 : 0);"""
    exe = build(tmp_path, "shift", RACY, body)
    racy = run(exe)
    assert "ThreadSanitizer: data race" in racy and "shift.cu:4" in racy and "shift.cu:6" in racy
    assert "ThreadSanitizer" not in run(exe, "sync")


def test_real_kernels_are_race_free(tmp_path):
    src = "\n".join(f'#include "{loader.HERE / f}"' for f in ("norm.cu", "softmax.cu", "attention.cu"))
    body = """    auto x = data(2 * 8 * 40, 3.0f), y = data(2 * 8 * 40, 0.0f), w = data(8, 1.0f), b = data(8, 1.0f);
    const float *xp = x.data(), *wp = w.data(), *bp = b.data(); float* yp = y.data();
    go(emu_launch_group_norm, {4, 1, 1, 64, 1, 1}, 0, xp, yp, wp, bp, 8, 2, 40, 1e-5f, 1);
    go(emu_launch_layer_norm, {1, 1, 1, 64, 1, 1}, 0, xp, yp, wp, bp, 80LL, 8, 1e-5f);
    go(emu_launch_softmax_rows_block, {10, 1, 1, 64, 1, 1}, 0, xp, yp, 64);
    go(emu_launch_softmax_rows, {1, 1, 1, 64, 1, 1}, 0, xp, yp, 80LL, 8);
    int T = 20, D = 16, BK = 8;
    auto q = data(T * D, 1.0f), o = data(T * D, 0.0f);
    const float* qp = q.data(); float* op = o.data();
    size_t shmem = 4 * (8 * D + BK * (D + 1) + BK * D + 2 * 8 * 64);
    go(emu_launch_attention_fwd, {(unsigned)(T + 7) / 8, 1, 1, 256, 1, 1}, shmem, qp, qp, qp, op, T, T, D,
       0.25f, 1, BK);"""
    report = run(build(tmp_path, "kernels", src, body))
    assert "ThreadSanitizer" not in report, report[-4000:]
