"""BLAS entry points numpy does not expose: sgemm with accumulation (C = A·B + beta·C) on strided
row-major views, sgemm callable from Numba kernels, and OpenBLAS's thread count.

Preferred: numpy's own bundled OpenBLAS (its CBLAS sgemm with 64-bit ints), so these calls share
numpy's thread pool instead of waking a second BLAS instance. Fallback: scipy's BLAS through
scipy.linalg.cython_blas (column-major Fortran interface: a row-major C = A·B is the
column-major Cᵀ = Bᵀ·Aᵀ, so the operands are passed swapped)."""
from __future__ import annotations

import ctypes
import glob
import os
import threading
from contextlib import contextmanager

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


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
_p_int = ctypes.POINTER(ctypes.c_int)
FORTRAN_SGEMM_ADDR = get_cython_function_address("scipy.linalg.cython_blas", "sgemm")
_fortran_sgemm = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_char_p, _p_int, _p_int, _p_int, ctypes.POINTER(ctypes.c_float), ctypes.c_void_p,
    _p_int, ctypes.c_void_p, _p_int, ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, _p_int,
)(FORTRAN_SGEMM_ADDR)

# For Numba kernels that call sgemm themselves (attention's tile loop): the function's address,
# passed as a run-time argument so the kernels stay cacheable on disk, and which interface it has
# (0: CBLAS row-major with 64-bit ints, 1: Fortran).
if _cblas_sgemm is not None:
    SGEMM_ADDR, SGEMM_KIND = ctypes.cast(_cblas_sgemm, ctypes.c_void_p).value, 0
else:
    SGEMM_ADDR, SGEMM_KIND = FORTRAN_SGEMM_ADDR, 1


def _symbol(name: str, argtypes: list, restype):
    fn = getattr(_lib, name, None) if _lib is not None else None
    if fn is not None:
        fn.argtypes, fn.restype = argtypes, restype
    return fn


# numpy's OpenBLAS thread count. Its "openblas_set_num_threads_local" is not thread-local in
# this (pthreads) build: measured, a call from a worker thread changes the count every thread
# sees. So the count is set once per run_items call from the calling thread and put back after.
_get_threads = _symbol("scipy_openblas_get_num_threads64_", [], ctypes.c_int)
_set_threads = _symbol("scipy_openblas_set_num_threads64_", [ctypes.c_int], None)
_threads_lock = threading.Lock()
_single_threaded_users = 0
_saved_threads = None


@contextmanager
def single_threaded_blas():
    """numpy's BLAS on one thread inside the block (nestable, safe with concurrent callers: the
    first to enter saves the count, the last to leave restores it). No-op for other BLAS."""
    global _single_threaded_users, _saved_threads
    if _get_threads is None or _set_threads is None:
        yield
        return
    with _threads_lock:
        if _single_threaded_users == 0:
            _saved_threads = _get_threads()
            _set_threads(1)
        _single_threaded_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _single_threaded_users -= 1
            if _single_threaded_users == 0:
                _set_threads(_saved_threads)


def blas_threads() -> int | None:
    """numpy's OpenBLAS thread count now (None for another BLAS)."""
    return _get_threads() if _get_threads is not None else None


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


def gemm_into(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float = 1.0, trans_b: bool = False,
              trans_a: bool = False) -> None:
    """c (M, N) = a (M, K) @ b (K, N) + beta * c, in place; row-major views with any row stride.
    trans_b: b is given as (N, K) and bᵀ is used (a linear layer's weight, no copy); trans_a: a is
    given as (K, M) and aᵀ is used (channels-first activations read as (tokens, channels))."""
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    N, Kb = (b.shape[0], b.shape[1]) if trans_b else (b.shape[1], b.shape[0])
    if Kb != K or c.shape != (M, N):
        raise ValueError(f"gemm_into: shapes {a.shape}{'ᵀ' if trans_a else ''} @ {b.shape}{'ᵀ' if trans_b else ''} "
                         f"-> {c.shape} do not agree")
    if SGEMM_KIND == 0:
        _cblas_sgemm(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS, M, N, K, 1.0,
                     a.ctypes.data, _ld(a), b.ctypes.data, _ld(b), beta, c.ctypes.data, _ld(c))
        return
    # column-major: cᵀ = op(b)ᵀ · op(a)ᵀ; a row-major matrix read column-major is its transpose, so a
    # transposed operand is passed as 'T'
    i = lambda v: ctypes.byref(ctypes.c_int(v))  # noqa: E731
    _fortran_sgemm(b"T" if trans_b else b"N", b"T" if trans_a else b"N", i(N), i(M), i(K),
                   ctypes.byref(ctypes.c_float(1.0)), b.ctypes.data, i(_ld(b)), a.ctypes.data, i(_ld(a)),
                   ctypes.byref(ctypes.c_float(beta)), c.ctypes.data, i(_ld(c)))


_I32, _I64, _F32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
_FP = _F32.as_pointer()
_GEMM_ARGS = (types.int64,) * 8 + (types.float32, types.int64, types.int64)


@intrinsic
def _cblas_call(typingctx, fn, M, N, K, a, lda, b, ldb, beta, c, ldc):
    """cblas_sgemm64_(RowMajor, NoTrans, NoTrans, M, N, K, 1, a, lda, b, ldb, beta, c, ldc)."""
    def codegen(context, builder, sig, args):
        fn, M, N, K, a, lda, b, ldb, beta, c, ldc = args
        fty = ir.FunctionType(ir.VoidType(), [_I32, _I32, _I32, _I64, _I64, _I64, _F32, _FP, _I64, _FP, _I64,
                                              _F32, _FP, _I64])
        const = lambda v: ir.Constant(_I32, v)  # noqa: E731
        builder.call(builder.inttoptr(fn, fty.as_pointer()),
                     [const(_ROW_MAJOR), const(_NO_TRANS), const(_NO_TRANS), M, N, K, ir.Constant(_F32, 1.0),
                      builder.inttoptr(a, _FP), lda, builder.inttoptr(b, _FP), ldb, beta,
                      builder.inttoptr(c, _FP), ldc])
        return context.get_dummy_value()

    return types.void(*_GEMM_ARGS), codegen


@intrinsic
def _fortran_call(typingctx, fn, M, N, K, a, lda, b, ldb, beta, c, ldc):
    """Fortran sgemm('N', 'N', N, M, K, 1, b, ldb, a, lda, beta, c, ldc): the row-major C = A·B is
    the column-major Cᵀ = Bᵀ·Aᵀ. Every argument by reference, 32-bit ints."""
    def codegen(context, builder, sig, args):
        fn, M, N, K, a, lda, b, ldb, beta, c, ldc = args
        ip, cp = _I32.as_pointer(), ir.IntType(8).as_pointer()
        fty = ir.FunctionType(ir.VoidType(), [cp, cp, ip, ip, ip, _FP, _FP, ip, _FP, ip, _FP, _FP, ip])
        ref = lambda v: cgutils.alloca_once_value(builder, v)  # noqa: E731
        i32 = lambda v: ref(builder.trunc(v, _I32))  # noqa: E731
        no_trans = ref(ir.Constant(ir.IntType(8), ord("N")))
        builder.call(builder.inttoptr(fn, fty.as_pointer()),
                     [no_trans, no_trans, i32(N), i32(M), i32(K), ref(ir.Constant(_F32, 1.0)),
                      builder.inttoptr(b, _FP), i32(ldb), builder.inttoptr(a, _FP), i32(lda), ref(beta),
                      builder.inttoptr(c, _FP), i32(ldc)])
        return context.get_dummy_value()

    return types.void(*_GEMM_ARGS), codegen


@njit(inline="always", cache=True)
def sgemm(fn, kind, M, N, K, a, lda, b, ldb, beta, c, ldc):
    """For Numba kernels: c (M, N) = a (M, K) @ b (K, N) + beta * c, row-major, on raw data
    addresses (array.ctypes.data) with row strides lda, ldb, ldc in elements. fn, kind: SGEMM_ADDR,
    SGEMM_KIND, passed in by the Python caller (a global would be frozen into the disk cache)."""
    if kind == 0:
        _cblas_call(fn, M, N, K, a, lda, b, ldb, beta, c, ldc)
    else:
        _fortran_call(fn, M, N, K, a, lda, b, ldb, beta, c, ldc)


_pools: dict = {}
_DONE = object()


def run_items(work, items: list, nthreads: int) -> None:
    """Call work(item) for every item on `nthreads` Python threads, with numpy's BLAS on one
    thread meanwhile. Items are independent GEMM-sized jobs handed out one at a time (a thread
    that is descheduled by a busy machine, or got a short item, takes fewer); there is no barrier
    inside a GEMM, and each item's result is computed identically whichever thread runs it
    (thread-count independent bits)."""
    nthreads = max(1, min(nthreads, len(items)))
    lock = threading.Lock()
    next_item = iter(items)

    def share():
        while True:
            with lock:
                it = next(next_item, _DONE)
            if it is _DONE:
                return
            work(it)

    with single_threaded_blas():
        if nthreads == 1:
            share()
            return
        if nthreads not in _pools:
            from concurrent.futures import ThreadPoolExecutor

            _pools[nthreads] = ThreadPoolExecutor(max_workers=nthreads, thread_name_prefix="minriff-blas")
        for f in [_pools[nthreads].submit(share) for _ in range(nthreads)]:
            f.result()
