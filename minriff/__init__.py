"""minriff: Riffusion (text -> spectrogram image -> music) on NumPy, Numba and CuPy kernels.

Public API: `minriff.Riffusion` (the pipeline, `minriff/pipeline.py`), `minriff.errors` (every error
minriff raises on purpose is a `MinriffError`), `minriff.atomic` (every file minriff writes goes
through it: whole or not at all), `__version__`. The packages, in import order:
kernels (ops) <- models (networks) <- weights (files) <- pipeline <- cli / bench; audio and
schedulers stand beside them and know no model. README's "Layout" has the map.
"""
import os as _os

__version__ = "0.1.0"

# Two thread pools take turns op by op in a model step: Numba's (OpenMP) for the elementwise and
# norm kernels, numpy's OpenBLAS for the GEMMs. By default each keeps its threads spinning long
# after its work (OpenBLAS for 2^28 cycles, ~0.1 s) and so takes the cores from the other.
# Measured on 2 cores, full-size UNet step: 8.8 s with the defaults; 7.4-7.6 s with OpenMP
# spinning 10^5 rounds and OpenBLAS 2^24 cycles (~7 ms; at 2^4 a GEMM after an idle moment ran
# at half speed); 7.1-7.3 s with OpenMP threads sleeping at once (OMP_WAIT_POLICY=PASSIVE), but
# then every small parallel kernel pays the wake-up, ~0.5 ms on this VM (GroupNorm+SiLU alone
# 1.1 instead of 0.58 ms). Set before numpy and Numba's OpenMP start (importing minriff first
# does that); a value you set yourself wins (try OMP_WAIT_POLICY=PASSIVE for whole-model runs).
# MINRIFF_THREAD_DEFAULTS=0 turns off this and the malloc and page settings below (the benchmarks'
# torch process uses that).
_DEFAULTS_ON = _os.environ.get("MINRIFF_THREAD_DEFAULTS") != "0"
ENV_DEFAULTS = {}
if _DEFAULTS_ON:
    ENV_DEFAULTS = {k: v for k, v in {"GOMP_SPINCOUNT": "100000", "OPENBLAS_THREAD_TIMEOUT": "24"}.items()
                    if k not in _os.environ}
    _os.environ.update(ENV_DEFAULTS)


def _keep_freed_memory() -> bool:
    """glibc malloc: serve big blocks from the heap, not mmap, and keep up to 1 GiB of freed heap.
    By default every array over 32 MB is a fresh mmap, and every first write to it a page fault:
    a UNet step allocates ~100 such arrays (activations, GEGLU's 84 MB projection) and spent 14 s
    of system time in 3 steps, 5 s after this; the step went 6.8 -> 6.5 s, peak RSS +100 MB
    (3.9 -> 4.0 GB). Skipped when the user tunes malloc themselves (MALLOC_* / GLIBC_TUNABLES)."""
    if any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in _os.environ):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        return False


MALLOC_TUNED = _DEFAULTS_ON and _keep_freed_memory()


def _small_pages_for_numpy() -> bool:
    """numpy asks the kernel for transparent huge pages (madvise) on every array of 4 MB and up.
    With the kernel's THP defrag on "madvise" (Debian's default) a first touch of such memory may
    stall in page compaction: measured here, writing 4 GB of fresh arrays took 10.4-11.7 s with
    it and 1.6-2.8 s without; one 105 MB Winograd weight transform into a fresh array 0.19-0.21
    against 0.03 s. A warm UNet step was the same either way (5.74/5.89 against 5.77/5.97 s), so
    the huge pages bought nothing here to pay for that. numpy reads NUMPY_MADVISE_HUGEPAGE when it
    is imported, and has a switch for after; a value you set yourself wins."""
    if "NUMPY_MADVISE_HUGEPAGE" in _os.environ:
        return False
    ENV_DEFAULTS["NUMPY_MADVISE_HUGEPAGE"] = "0"  # (the benchmarks' torch child does without it)
    _os.environ["NUMPY_MADVISE_HUGEPAGE"] = "0"
    import sys

    if "numpy" in sys.modules:  # imported before minriff: the switch, where this numpy has it
        core = getattr(sys.modules["numpy"], "_core", None) or getattr(sys.modules["numpy"], "core", None)
        setter = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
        if setter is None:
            return False
        setter(False)
    return True


SMALL_PAGES = _DEFAULTS_ON and _small_pages_for_numpy()

from minriff import errors  # noqa: E402
from minriff.errors import (  # noqa: E402
    AudioError,
    ConfigError,
    DownloadError,
    InputError,
    MinriffError,
    UnsupportedModelError,
    WeightsError,
)

__all__ = ["Riffusion", "errors", "__version__", "MinriffError", "InputError", "WeightsError", "AudioError",
           "ConfigError", "DownloadError", "UnsupportedModelError"]


def __getattr__(name):
    # Lazy: `import minriff` stays cheap (no numpy, no Numba); the pipeline pulls in the models only
    # when asked for.
    if name == "Riffusion":
        from minriff.pipeline import Riffusion

        return Riffusion
    raise AttributeError(f"module 'minriff' has no attribute {name!r}")
