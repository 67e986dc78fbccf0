"""Module loaders with CuPy's interface: `loader.get_function(name)(grid, block, args, shared_mem=0)`.

- `CupyLoader`: `cupy.RawModule` on a GPU, launched on CuPy arrays.
- `EmulatorLoader`: the same `.cu` source compiled by g++ (C++20) against `emu/cuda_emu.h`
  (force-included), cached by source hash, loaded with ctypes and launched on NumPy arrays.

Both check every launch's arguments against the kernel's C prototype (signature.py) and the
launch shape against the limits a GPU enforces, so the emulator rejects what CuPy would reject."""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from minriff.errors import MinriffError
from minriff.kernels.cuda import signature

HERE = Path(__file__).resolve().parent
EMU_HEADER = HERE / "emu" / "cuda_emu.h"
MAX_THREADS_PER_BLOCK = 1024
MAX_SHARED_DEFAULT = 48 * 1024  # dynamic shared memory above this needs an opt-in on a GPU
_EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([A-Za-z_][\w\s]*?)\s+(\w+)\s*\[\s*\]\s*;")


class LaunchError(MinriffError, RuntimeError):
    """A launch the GPU would refuse (bad shape, too much shared memory) or an emulator failure."""


_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[^\n]*$', re.M)


def source_of(name_or_path) -> tuple[str, Path]:
    """The kernel source with its local `#include "x.h"` files inlined, so the compiled module
    (and CuPy's and the emulator's caches, keyed by source text) follow every header change."""
    p = Path(name_or_path)
    if not p.suffix:
        p = HERE / f"{p}.cu"
    seen: set[Path] = set()

    def inline(path: Path) -> str:
        def one(m):
            inc = (path.parent / m.group(1)).resolve()
            if inc in seen:
                return ""
            seen.add(inc)
            resume = path.read_text()[:m.start()].count("\n") + 2  # the line after the #include
            return f'#line 1 "{inc}"\n' + inline(inc).replace("#pragma once", "") + f'\n#line {resume} "{path}"'
        return _LOCAL_INCLUDE.sub(one, path.read_text())

    return inline(p), p


def source_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _dims(v, what) -> tuple[int, int, int]:
    t = (v,) if isinstance(v, (int, np.integer)) else tuple(v)
    if not 1 <= len(t) <= 3 or any(int(d) < 1 for d in t):
        raise LaunchError(f"{what} must be 1 to 3 positive ints, got {v!r}")
    return tuple(int(d) for d in t) + (1,) * (3 - len(t))


def check_launch(kernel, grid, block, shared_mem):
    g, b = _dims(grid, f"kernel {kernel}: grid"), _dims(block, f"kernel {kernel}: block")
    if b[0] * b[1] * b[2] > MAX_THREADS_PER_BLOCK or b[2] > 64:
        raise LaunchError(f"kernel {kernel}: block {b} exceeds {MAX_THREADS_PER_BLOCK} threads (z <= 64)")
    if g[1] > 65535 or g[2] > 65535 or g[0] > 2**31 - 1:
        raise LaunchError(f"kernel {kernel}: grid {g} exceeds the CUDA grid limits")
    if not 0 <= shared_mem <= MAX_SHARED_DEFAULT:
        raise LaunchError(f"kernel {kernel}: {shared_mem} B of dynamic shared memory (limit {MAX_SHARED_DEFAULT})")
    return g, b


# ---------------------------------------------------------------- emulator
def cache_dir() -> Path:
    root = os.environ.get("MINRIFF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minriff")
    d = Path(root) / "cuda_emu"
    d.mkdir(parents=True, exist_ok=True)
    return d


def emulator_source(source: str, path: Path, kernels) -> str:
    """The translation unit g++ compiles: the kernel file with `extern __shared__` arrays turned
    into pointers to the launch's dynamic buffer, plus one exported launcher per kernel."""
    body = _EXTERN_SHARED.sub(lambda m: f"{m.group(1)}* {m.group(2)} = "
                              f"reinterpret_cast<{m.group(1)}*>(emu_dynamic_shared());", source)
    exports = "".join(f"MINRIFF_EMU_EXPORT({k})\n" for k in kernels)
    return f'#line 1 "{path}"\n{body}\n#line 1 "<minriff emulator exports>"\n{exports}'


def compile_emulated(source: str, path: Path, kernels, flags=()) -> Path:
    flags = ("-std=c++20", "-O2", "-shared", "-fPIC", "-pthread", "-fvisibility=hidden", *flags)
    tu = emulator_source(source, path, kernels)
    key = hashlib.sha256("\0".join([EMU_HEADER.read_text(), tu, *flags]).encode()).hexdigest()[:24]
    so = cache_dir() / f"{path.stem}-{key}.so"
    if so.exists():
        return so
    with tempfile.TemporaryDirectory(dir=so.parent) as tmp:
        cpp = Path(tmp) / f"{path.stem}.cpp"
        cpp.write_text(tu)
        out = Path(tmp) / so.name
        cmd = ["g++", *flags, "-include", str(EMU_HEADER), "-I", str(path.parent), str(cpp), "-o", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise LaunchError(f"emulator build of {path.name} failed:\n{r.stderr[-4000:]}")
        os.replace(out, so)  # atomic: concurrent test processes never load a half-written file
    return so


class EmulatedKernel:
    def __init__(self, lib, name, params):
        self.name, self.params = name, params
        self._fn = getattr(lib, f"emu_launch_{name}")
        self._fn.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
        self._fn.restype = ctypes.c_int
        self._err = lib.emu_last_error
        self._err.restype = ctypes.c_char_p

    def __call__(self, grid, block, args, shared_mem=0):
        g, b = check_launch(self.name, grid, block, shared_mem)
        vals = signature.convert(self.name, self.params, args, lambda a: isinstance(a, np.ndarray))
        boxes = []  # keeps every converted value alive during the call
        for p, v in zip(self.params, vals):
            if p.pointer:
                boxes.append(ctypes.c_void_p(v.ctypes.data))
            else:
                boxes.append(_box(v))
        argv = (ctypes.c_void_p * max(1, len(boxes)))(*[ctypes.cast(ctypes.pointer(x), ctypes.c_void_p) for x in boxes])
        dims = (ctypes.c_uint * 6)(*g, *b)
        if self._fn(dims, shared_mem, argv):
            raise LaunchError(f"kernel {self.name}: {self._err().decode()}")


_CTYPES = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.uint32): ctypes.c_uint32,
           np.dtype(np.int64): ctypes.c_int64, np.dtype(np.uint64): ctypes.c_uint64,
           np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double,
           np.dtype(np.bool_): ctypes.c_bool}


def _box(v):
    return _CTYPES[np.dtype(type(v))](v.item())


class EmulatorLoader:
    """Loads one `.cu` file for the CPU emulator. `threads=True` builds the OS-thread variant."""
    xp = np

    def __init__(self, name_or_path, *, flags=(), threads=False):
        source, self.path = source_of(name_or_path)
        self.signatures = signature.parse(source)
        flags = tuple(flags) + (("-DMINRIFF_EMU_THREADS",) if threads else ())
        self.library = compile_emulated(source, self.path, self.signatures, flags)
        self._lib = ctypes.CDLL(str(self.library))
        self._kernels = {}

    def get_function(self, name):
        if name not in self.signatures:
            raise LaunchError(f"{self.path.name} has no kernel {name!r}; it has {', '.join(self.signatures)}")
        if name not in self._kernels:
            self._kernels[name] = EmulatedKernel(self._lib, name, self.signatures[name])
        return self._kernels[name]


# ---------------------------------------------------------------- CuPy
class CupyKernel:
    def __init__(self, raw, name, params):
        self.raw, self.name, self.params = raw, name, params

    def __call__(self, grid, block, args, shared_mem=0):
        import cupy
        g, b = check_launch(self.name, grid, block, shared_mem)
        vals = signature.convert(self.name, self.params, args, lambda a: isinstance(a, cupy.ndarray))
        self.raw(g, b, tuple(vals), shared_mem=shared_mem)


class CupyLoader:
    """`cupy.RawModule` over one `.cu` file (compiled by NVRTC on first use)."""

    OPTIONS = ("--std=c++17",)

    def __init__(self, name_or_path, *, options=OPTIONS):
        import cupy
        source, self.path = source_of(name_or_path)
        self.signatures = signature.parse(source)
        self.module = cupy.RawModule(code=source, options=tuple(options))
        self._kernels = {}
        self.xp = cupy

    def get_function(self, name):
        if name not in self.signatures:
            raise LaunchError(f"{self.path.name} has no kernel {name!r}; it has {', '.join(self.signatures)}")
        if name not in self._kernels:
            self._kernels[name] = CupyKernel(self.module.get_function(name), name, self.signatures[name])
        return self._kernels[name]


def gpu_available() -> bool:
    if os.environ.get("MINRIFF_CUDA_EMULATE") == "1":
        return False
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


_modules: dict[str, object] = {}


def module(name: str):
    """The loaded module for kernels/cuda/<name>.cu on this host's device (GPU or emulator)."""
    if name not in _modules:
        if gpu_available():
            _modules[name] = CupyLoader(name)
        elif shutil.which("g++") is None:
            raise LaunchError("the cuda backend needs a GPU with CuPy, or g++ (C++20) for its CPU emulator; "
                              "neither was found")
        else:
            _modules[name] = EmulatorLoader(name)
    return _modules[name]
