"""minriff: Riffusion (text -> spectrogram image -> music) on NumPy, Numba and CuPy kernels."""
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
# does that); a value you set yourself wins (try OMP_WAIT_POLICY=PASSIVE for whole-model runs), and
# MINRIFF_THREAD_DEFAULTS=0 turns this off (the benchmarks' torch process uses that).
ENV_DEFAULTS = {}
if _os.environ.get("MINRIFF_THREAD_DEFAULTS") != "0":
    ENV_DEFAULTS = {k: v for k, v in {"GOMP_SPINCOUNT": "100000", "OPENBLAS_THREAD_TIMEOUT": "24"}.items()
                    if k not in _os.environ}
    _os.environ.update(ENV_DEFAULTS)

from .errors import MinriffError  # noqa: F401


def __getattr__(name):
    # Lazy: `import minriff` stays cheap; the pipeline pulls in the models only when asked for.
    if name == "Riffusion":
        from .pipeline import Riffusion
        return Riffusion
    raise AttributeError(f"module 'minriff' has no attribute {name!r}")
