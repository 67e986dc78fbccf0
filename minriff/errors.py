"""minriff's own error types. Everything a user can cause (bad files, bad arguments, bad
input data) surfaces as a MinriffError subclass with a message naming the problem; the CLI
prints it as one line and exits with status 2."""


class MinriffError(Exception):
    """Base class of every error minriff raises on purpose."""


class WeightsError(MinriffError):
    """A weights file or checkpoint is missing, corrupt, unsafe, unsupported or does not fit the model."""


class UnsafePickleError(WeightsError):
    """A torch pickle asked for a global outside the allowed tensor-rebuild set."""


class UnsupportedModelError(WeightsError):
    """A real checkpoint of a model family minriff does not run (SD 2.x, SDXL, inpainting, ...)."""


class ConfigError(MinriffError):
    """A model or scheduler configuration is invalid or unknown."""


class AudioError(MinriffError):
    """An audio or spectrogram-image file cannot be read, written or converted."""


class InputError(MinriffError, ValueError):
    """A user argument is out of range or malformed (prompt, duration, steps, JSON, ...)."""


class NumericsError(MinriffError):
    """A computation produced NaN or infinity (inputs at the edge of their ranges, or broken weights)."""


class DownloadError(MinriffError):
    """A download failed (network, HTTP status, size or checksum mismatch)."""


class OutputError(MinriffError):
    """An output file cannot be written: disk full, file too large, read-only file system, no
    permission, or the target exists and is not a regular file (a folder, a device, a FIFO, ...)."""
