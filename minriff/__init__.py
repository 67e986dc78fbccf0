"""minriff: Riffusion (text -> spectrogram image -> music) on NumPy, Numba and CuPy kernels."""
__version__ = "0.1.0"

from .errors import MinriffError  # noqa: F401


def __getattr__(name):
    # Lazy: `import minriff` stays cheap; the pipeline pulls in the models only when asked for.
    if name == "Riffusion":
        from .pipeline import Riffusion
        return Riffusion
    raise AttributeError(f"module 'minriff' has no attribute {name!r}")
