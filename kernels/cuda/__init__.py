"""The CUDA backend (CuPy, or the CPU emulator). Not written yet."""
raise ImportError("the cuda backend is not available yet")
