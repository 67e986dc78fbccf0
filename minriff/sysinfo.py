"""Facts about the machine read at run time (no numpy, no models): the pipeline's kernel-cache
budget and the batch driver's worker count both ask how much memory is free now."""
from __future__ import annotations


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes; None where it cannot be read (not Linux, a
    sandbox): each caller chooses its own assumption then."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
