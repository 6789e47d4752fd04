"""The kernels behind the engine: matrix product (GEMM) and rank-1 update (GER).

The autograd engine calls only ``gemm`` and ``ger`` from here.
"""

import numpy as np


def name():
    """Which backend runs the kernels: ``"numpy"``."""
    return "numpy"


def _check_float_matrix(what, x, ndim):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{what} must be float32 or float64, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{what} must be {ndim}-D, got shape {x.shape}")


def gemm(a, b, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None):
    """``out = alpha * op(a) @ op(b) + beta * out``, op = transpose where asked.

    With ``out=None`` a new array is returned (``beta`` is then ignored). ``beta=1`` accumulates
    into ``out``: how the backward pass adds a gradient without a temporary.
    """
    _check_float_matrix("a", a, 2)
    _check_float_matrix("b", b, 2)
    if a.dtype != b.dtype:
        raise TypeError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    A = a.T if trans_a else a
    B = b.T if trans_b else b
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"gemm: op(a) has shape {A.shape} and op(b) has shape {B.shape}; "
                         f"inner dimensions {A.shape[1]} and {B.shape[0]} differ")
    if out is None:
        result = A @ B
        if alpha != 1.0:
            result *= alpha
        return result
    _check_float_matrix("out", out, 2)
    if out.shape != (A.shape[0], B.shape[1]) or out.dtype != a.dtype:
        raise ValueError(f"out must have shape {(A.shape[0], B.shape[1])} and dtype {a.dtype}, "
                         f"got {out.shape} {out.dtype}")
    if beta == 0.0:
        np.matmul(A, B, out=out)  # NumPy copies first if out overlaps an input
        if alpha != 1.0:
            out *= alpha
    else:
        product = A @ B
        if beta != 1.0:
            out *= beta
        out += product if alpha == 1.0 else alpha * product
    return out


def ger(A, x, y, alpha=1.0):
    """Rank-1 update in place: ``A += alpha * outer(x, y)``; returns ``A``."""
    _check_float_matrix("A", A, 2)
    _check_float_matrix("x", x, 1)
    _check_float_matrix("y", y, 1)
    if not (A.dtype == x.dtype == y.dtype):
        raise TypeError(f"A, x and y must share a dtype, got {A.dtype}, {x.dtype}, {y.dtype}")
    if A.shape != (x.shape[0], y.shape[0]):
        raise ValueError(f"ger: A has shape {A.shape} but outer(x, y) has shape {(x.shape[0], y.shape[0])}")
    A += alpha * np.outer(x, y)
    return A
