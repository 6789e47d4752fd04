"""The C backend: the kernels in csrc/, called through the cffi module ``tinygrad_edu._kernels``.

Arguments arrive checked (types, shapes, ``out``); what is left here is layout. C wants each
matrix as rows with a leading dimension: a row-major view is passed as is, a column-major one
(such as ``w.T``) as its transpose with the transpose flag flipped, anything else is copied.
"""

import os

import numpy as np

from . import numpy_kernels
from .._kernels import ffi, lib

NAME = "c"
THREADS = max(1, int(os.environ.get("TINYGRAD_EDU_NUM_THREADS") or os.cpu_count() or 1))
# below this many multiply-adds a second thread costs more to start than it saves (measured)
PARALLEL_MIN_FMAS = 8_000_000
# below this many, a call's fixed cost (~2.5 us) outweighs the kernel's speed and NumPy is as fast
# (12x128 @ 128x64, 98k: NumPy 4.2 us, C 5.2 us), so hand it over. Measured on the training step:
# 100k is the best of 0 / 100k / 200k (200k sent batch-1 layers to NumPy's slower M=1 path).
# Except for K = 1 (the batch-1 weight gradient, an outer product), where NumPy is 2-6x slower
# (256x1 @ 1x128: NumPy 32.7 us, C 5.9 us).
NUMPY_BELOW_FMAS = 100_000
_C_TYPES = {np.dtype(np.float32): ("float", lib.tge_sgemm, lib.tge_sger, lib.tge_saxpy),
            np.dtype(np.float64): ("double", lib.tge_dgemm, lib.tge_dger, lib.tge_daxpy)}
ISA_NAMES = {3: "avx512", 2: "avx2", 1: "sse2", 0: "portable"}


def isa():
    """The instruction set the kernels run with on this CPU."""
    return ISA_NAMES[lib.tge_isa()]


def _pointer(ctype, x):
    """A C pointer to x's first element (x stays alive in the caller during the call)."""
    if x.flags.c_contiguous:
        return ffi.from_buffer(ctype + "[]", x)   # about 5x cheaper than going through ctypes
    return ffi.cast(ctype + " *", x.ctypes.data)


def _rows(x, trans):
    """``(array, trans, ld)`` with ``array`` row-major (unit column stride, leading dimension ``ld``)."""
    if not x.flags.aligned:  # C may assume every element sits at a multiple of its size
        x = x.copy()
    item = x.itemsize
    rows, cols = x.shape
    if x.strides[1] == item and x.strides[0] >= max(cols, 1) * item and x.strides[0] % item == 0:
        return x, trans, x.strides[0] // item
    if x.strides[0] == item and x.strides[1] >= max(rows, 1) * item and x.strides[1] % item == 0:
        return x, not trans, x.strides[1] // item   # column-major: pass x^T, row-major, flipped
    # Left: a dimension of size 0 or 1, whose stride NumPy leaves arbitrary (then x is already
    # C-contiguous), or a general strided view, which is copied.
    return np.ascontiguousarray(x), trans, max(cols, 1)


def gemm(a, b, trans_a, trans_b, alpha, beta, out):
    ctype, kernel, _, _ = _C_TYPES[a.dtype]
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if m * n * k < NUMPY_BELOW_FMAS and k > 1:
        return numpy_kernels.gemm(a, b, trans_a, trans_b, alpha, beta, out)
    a, trans_a, lda = _rows(a, trans_a)
    b, trans_b, ldb = _rows(b, trans_b)
    threads = THREADS if m * n * k >= PARALLEL_MIN_FMAS else 1
    status = kernel(int(trans_a), int(trans_b), m, n, k, alpha, _pointer(ctype, a), lda,
                    _pointer(ctype, b), ldb, beta, _pointer(ctype, out), max(out.strides[0] // out.itemsize, 1),
                    threads)
    if status != 0:
        raise MemoryError(f"gemm: could not allocate scratch memory for a {m}x{k} @ {k}x{n} product")
    return out


def ger(A, x, y, alpha):
    ctype, _, kernel, _ = _C_TYPES[A.dtype]
    x, y = (v if v.flags.c_contiguous and v.flags.aligned else v.copy() for v in (x, y))
    kernel(A.shape[0], A.shape[1], alpha, _pointer(ctype, x), _pointer(ctype, y), _pointer(ctype, A),
           max(A.strides[0] // A.itemsize, 1))
    return A


def axpy(alpha, x, y):
    ctype, _, _, kernel = _C_TYPES[y.dtype]
    kernel(y.size, alpha, _pointer(ctype, x), _pointer(ctype, y))
    return y
