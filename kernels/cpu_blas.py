"""Direct sgemm with accumulation (C = A·B + beta·C) on strided row-major views, which numpy's
matmul cannot do (no beta, no output accumulation). Calls scipy's BLAS (scipy.linalg.cython_blas,
column-major Fortran interface) through ctypes; a row-major C = A·B is the column-major
Cᵀ = Bᵀ·Aᵀ, so the operands are passed swapped, with each view's row stride as leading dim."""
from __future__ import annotations

import ctypes

import numpy as np
from numba.extending import get_cython_function_address

_p_int, _p_f32, _p_chr = ctypes.POINTER(ctypes.c_int), ctypes.c_void_p, ctypes.c_char_p
_sgemm = ctypes.CFUNCTYPE(None, _p_chr, _p_chr, _p_int, _p_int, _p_int, ctypes.POINTER(ctypes.c_float), _p_f32, _p_int,
                          _p_f32, _p_int, ctypes.POINTER(ctypes.c_float), _p_f32, _p_int)(
    get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))


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
    assert b.shape[0] == K and c.shape == (M, N)
    i = lambda v: ctypes.byref(ctypes.c_int(v))  # noqa: E731
    _sgemm(b"N", b"N", i(N), i(M), i(K), ctypes.byref(ctypes.c_float(1.0)), b.ctypes.data, i(_ld(b)),
           a.ctypes.data, i(_ld(a)), ctypes.byref(ctypes.c_float(beta)), c.ctypes.data, i(_ld(c)))
