"""BLAS entry points numpy does not expose: sgemm with accumulation (C = A·B + beta·C) on strided
row-major views, and OpenBLAS's per-thread thread count.

Preferred: numpy's own bundled OpenBLAS (its CBLAS sgemm with 64-bit ints), so these calls share
numpy's thread pool instead of waking a second BLAS instance. Fallback: scipy's BLAS through
scipy.linalg.cython_blas (column-major Fortran interface: a row-major C = A·B is the
column-major Cᵀ = Bᵀ·Aᵀ, so the operands are passed swapped)."""
from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS = 101, 111


def _numpy_openblas():
    root = os.path.dirname(os.path.dirname(np.__file__))
    for path in glob.glob(os.path.join(root, "numpy.libs", "*openblas*.so*")):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


_lib = _numpy_openblas()
_cblas_sgemm = getattr(_lib, "scipy_cblas_sgemm64_", None) if _lib is not None else None
if _cblas_sgemm is not None:
    _i64, _f32 = ctypes.c_int64, ctypes.c_float
    _cblas_sgemm.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, _i64, _i64, _i64, _f32, ctypes.c_void_p, _i64,
                             ctypes.c_void_p, _i64, _f32, ctypes.c_void_p, _i64]
    _cblas_sgemm.restype = None
    _fortran_sgemm = None
else:
    from numba.extending import get_cython_function_address

    _p_int = ctypes.POINTER(ctypes.c_int)
    _fortran_sgemm = ctypes.CFUNCTYPE(
        None, ctypes.c_char_p, ctypes.c_char_p, _p_int, _p_int, _p_int, ctypes.POINTER(ctypes.c_float), ctypes.c_void_p,
        _p_int, ctypes.c_void_p, _p_int, ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, _p_int,
    )(get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))

_local_threads = getattr(_lib, "openblas_set_num_threads_local", None) if _lib is not None else None
if _local_threads is not None:
    _local_threads.argtypes, _local_threads.restype = [ctypes.c_int], ctypes.c_int


def set_threads_local(n: int) -> int | None:
    """Set numpy's OpenBLAS thread count for the calling thread only; returns the previous
    value, or None when that is not available (another BLAS)."""
    return _local_threads(n) if _local_threads is not None else None


def _ld(a: np.ndarray) -> int:
    """Row stride in elements (BLAS leading dimension); size-1 axes may carry any stride."""
    rows, cols = a.shape if a.ndim == 2 else (0, 0)
    if a.dtype != np.float32 or a.ndim != 2 or (cols > 1 and a.strides[1] != 4):
        raise ValueError("gemm_into: operands must be 2-D float32 views with unit column stride")
    if rows <= 1:
        return max(cols, 1)
    if a.strides[0] % 4 or a.strides[0] < 4 * cols:
        raise ValueError("gemm_into: rows must not overlap")
    return max(a.strides[0] // 4, 1)


def gemm_into(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float = 1.0) -> None:
    """c (M, N) = a (M, K) @ b (K, N) + beta * c, in place; row-major views with any row stride."""
    M, K = a.shape
    N = b.shape[1]
    if b.shape[0] != K or c.shape != (M, N):
        raise ValueError(f"gemm_into: shapes {a.shape} @ {b.shape} -> {c.shape} do not agree")
    if _cblas_sgemm is not None:
        _cblas_sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, M, N, K, 1.0, a.ctypes.data, _ld(a), b.ctypes.data, _ld(b),
                     beta, c.ctypes.data, _ld(c))
        return
    i = lambda v: ctypes.byref(ctypes.c_int(v))  # noqa: E731
    _fortran_sgemm(b"N", b"N", i(N), i(M), i(K), ctypes.byref(ctypes.c_float(1.0)), b.ctypes.data, i(_ld(b)),
                   a.ctypes.data, i(_ld(a)), ctypes.byref(ctypes.c_float(beta)), c.ctypes.data, i(_ld(c)))


_pools: dict = {}


def run_items(work, items: list, nthreads: int) -> None:
    """Call work(item) for every item on `nthreads` Python threads, each with single-threaded
    BLAS. Items are independent GEMM-sized jobs; splitting work this way has no barrier inside a
    GEMM, so a thread descheduled by a busy machine delays only its own items, and each item's
    result is computed identically whichever thread runs it (thread-count independent bits)."""
    nthreads = max(1, min(nthreads, len(items)))

    def share(part):
        prev = set_threads_local(1)
        try:
            for it in part:
                work(it)
        finally:
            if prev is not None:
                set_threads_local(prev)

    if nthreads == 1:
        share(items)
        return
    if nthreads not in _pools:
        from concurrent.futures import ThreadPoolExecutor

        _pools[nthreads] = ThreadPoolExecutor(max_workers=nthreads, thread_name_prefix="minriff-blas")
    for f in [_pools[nthreads].submit(share, items[i::nthreads]) for i in range(nthreads)]:
        f.result()
