"""Placeholder: the Numba backend is being written; until then cpu = ref in float32."""
from .ref import *  # noqa: F401,F403
from .ref import xp  # noqa: F401
