"""The kernels behind the engine: matrix products (``gemm``, and ``batched_gemm`` for a stack),
nn.Linear's three gradients (``linear_backward``), rank-1 update (``ger``), the in-place SGD
update of all parameters (``axpy_many``) and of their momentum buffers (``axpby_many``), ReLU
forward and backward (``relu``, ``relu_backward``), the softmax cross-entropy loss
(``cross_entropy``) with its reduction and gradient scaling (``total``, ``scale_rows``), the
windows of convolution and pooling (``im2col``, ``col2im``, ``max_pool``, ``max_pool_backward``),
and the tile transforms of Winograd's convolution (``winograd_input``, ``winograd_output`` and
their adjoints).

Two backends implement them: ``"c"`` (the C kernels in csrc/, compiled through cffi) and
``"numpy"`` (NumPy/OpenBLAS). The C one is used when it is built; ``TINYGRAD_EDU_BACKEND=c|numpy``
forces a choice, and ``with backend.use("numpy"):`` switches for a block of code (in the calling
thread only, like ``no_grad``). Every argument is checked here, once, before either backend sees
it, so bad input gets a Python exception naming the problem and never reaches C.
"""

import contextlib
import math
import numbers
import os
import threading
import warnings

import numpy as np

from . import numpy_kernels
from .numpy_kernels import winograd_tile_counts   # both backends' kernels size their tiles with it

try:
    from . import c_kernels
except ImportError as error:  # not built (no compiler at install time): NumPy does the work
    c_kernels, _c_import_error = None, error

_BACKENDS = {"numpy": numpy_kernels}
if c_kernels is not None:
    _BACKENDS["c"] = c_kernels


def available():
    """Names of the backends that can run here."""
    return sorted(_BACKENDS)


def _resolve(wanted):
    if wanted not in ("c", "numpy"):
        raise ValueError(f"unknown backend {wanted!r}: choose 'c' or 'numpy'")
    if wanted == "c" and c_kernels is None:
        raise RuntimeError(f"the C kernels are not built ({_c_import_error}); build them with "
                           f"`python build_ext.py` or `pip install -e .` with a C compiler, or use "
                           f"the 'numpy' backend")
    return _BACKENDS[wanted]


def _initial_backend():
    wanted = os.environ.get("TINYGRAD_EDU_BACKEND", "").strip().lower()
    if wanted:
        return _resolve(wanted)
    if c_kernels is None:
        warnings.warn("tinygrad_edu: C kernels not built, running on NumPy "
                      "(build them with `python build_ext.py`)", RuntimeWarning, stacklevel=3)
        return numpy_kernels
    return c_kernels


_process_default = _initial_backend()   # TINYGRAD_EDU_BACKEND, else C when built


class _Selection(threading.local):
    """The backend in use, per thread (as no_grad's grad mode): a switch by ``use`` holds in its
    own thread, and every thread starts with the class default, the process's choice."""

    kernels = _process_default


_selected = _Selection()


def name():
    """``"c"`` or ``"numpy"``: the backend this thread uses."""
    return _selected.kernels.NAME


@contextlib.contextmanager
def use(backend_name):
    """``with backend.use("numpy"): ...`` runs the block on that backend. Only this thread
    switches: others go on with theirs."""
    previous, _selected.kernels = _selected.kernels, _resolve(backend_name)
    try:
        yield
    finally:
        _selected.kernels = previous


# --- argument checks (shared by both backends) -------------------------------------------------
_FLOAT_DTYPES = frozenset([np.dtype(np.float32), np.dtype(np.float64)])  # hashing beats ==


def _check_float_arrays(ndim, *named_arrays):
    """Each ``(name, array)`` pair holds a float32 or float64 ndarray (with ``ndim`` dimensions,
    unless ``ndim`` is None); otherwise raise, naming the argument. One call for all of a
    kernel's arrays: the checks run for every kernel call."""
    for what, x in named_arrays:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{what} must be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{what} must be float32 or float64, got {x.dtype}")
        if ndim is not None and x.ndim != ndim:
            raise ValueError(f"{what} must be {ndim}-D, got shape {x.shape}")


def _real_number(what, value):
    """``value`` as a Python float, if it is a real number: an int or float, a NumPy integer or
    floating scalar, or a 0-d array of one (NumPy's scalars; a 0-d Tensor's data). Not a bool,
    which is a flag passed one place off, nor an array of one element (NumPy deprecates float()
    on those)."""
    if type(value) is float:   # the usual case, first: gemm runs for every product
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        return float(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    got = (f"an array of shape {value.shape} and dtype {value.dtype}" if isinstance(value, np.ndarray)
           else f"{value!r} ({type(value).__name__})")
    raise TypeError(f"{what} must be a real number (int, float, or a NumPy real scalar), got {got}")


def _check_flag(what, value):
    if not (value is True or value is False or isinstance(value, np.bool_)):
        raise TypeError(f"{what} must be a bool (True or False), got {value!r} ({type(value).__name__})")


def _check_out(what, out, shape, dtype, inputs):
    _check_float_arrays(2, (what, out))
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"{what} must have shape {shape} and dtype {dtype}, got {out.shape} {out.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{what} is read-only")
    if out.size:
        # C writes row i at element i * ld, its items side by side: so the rows must be a whole
        # number of items apart (ld is that number, never rounded) and must not overlap; a
        # dimension of length 1 has no stride to get wrong (NumPy's flags ignore it too)
        (rows, cols), (row_stride, col_stride), item = out.shape, out.strides, out.itemsize
        if not ((rows == 1 or (row_stride % item == 0 and row_stride >= cols * item))
                and (cols == 1 or col_stride == item)):
            raise ValueError(f"{what} must have contiguous rows a whole number of items apart "
                             f"(row-major, as from np.empty), got strides {out.strides} for "
                             f"{item}-byte items")
        if not out.flags.aligned:
            raise ValueError(f"{what} is not aligned: C needs every item at a multiple of "
                             f"{out.dtype.alignment} bytes (as in any array NumPy allocates), got "
                             f"strides {out.strides} from address {out.ctypes.data:#x}")
    for label, x in inputs:
        if x is not None and np.may_share_memory(out, x):
            raise ValueError(f"{what} overlaps {label}: the result would overwrite its own input")


def gemm(a, b, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None, bias=None):
    """``out = alpha * op(a) @ op(b) + beta * out + bias``, op = transpose where asked.

    With ``out=None`` a new array is returned (``beta`` is then ignored). ``beta=1`` accumulates
    into ``out``: how a gradient is added without a temporary. ``bias`` (one value per column, or
    None) is added to every row: nn.Linear's ``x @ W.T + b`` in one pass. ``a`` and ``b`` may be
    views (transposed, sliced); ``out`` needs contiguous rows and must not overlap the inputs.
    ``trans_a`` and ``trans_b`` are bools, ``alpha`` and ``beta`` real numbers.
    """
    _check_float_arrays(2, ("a", a), ("b", b))
    if not (type(alpha) is type(beta) is float and (trans_a is True or trans_a is False)
            and (trans_b is True or trans_b is False)):
        # not the usual call (Python floats and bools, tested inline: gemm runs for every product)
        _check_flag("trans_a", trans_a)
        _check_flag("trans_b", trans_b)
        alpha, beta = _real_number("alpha", alpha), _real_number("beta", beta)
    if a.dtype != b.dtype:
        raise TypeError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    k2, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != k2:
        raise ValueError(f"gemm: op(a) has shape {(m, k)} and op(b) has shape {(k2, n)}; "
                         f"inner dimensions {k} and {k2} differ")
    if bias is not None:
        _check_float_arrays(1, ("bias", bias))
        if bias.shape != (n,) or bias.dtype != a.dtype:
            raise ValueError(f"bias must have shape {(n,)} and dtype {a.dtype}, "
                             f"got {bias.shape} {bias.dtype}")
    if out is None:
        return _selected.kernels.gemm(a, b, trans_a, trans_b, alpha, 0.0, np.empty((m, n), a.dtype), bias)
    _check_out("out", out, (m, n), a.dtype, [("a", a), ("b", b), ("bias", bias)])
    return _selected.kernels.gemm(a, b, trans_a, trans_b, alpha, beta, out, bias)


def batched_gemm(a, b, trans_a=False, trans_b=False, out=None, accumulate=False):
    """``out[i] = op(a[i]) @ op(b[i])`` for each of a stack of products (3-D ``a`` and ``b``, the
    same number of matrices; op = transpose where asked), into ``out`` (a new array if None; else
    C-contiguous, not overlapping the inputs), or added to it with ``accumulate``. Both backends
    hand the stack to NumPy's matmul, which loops over OpenBLAS without Python in between: for
    Winograd's 64 small products, ~2x faster than 64 calls of ``gemm``."""
    _check_float_arrays(3, ("a", a), ("b", b))
    _check_flag("trans_a", trans_a)
    _check_flag("trans_b", trans_b)
    _check_flag("accumulate", accumulate)
    if a.dtype != b.dtype:
        raise TypeError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    count, m, k = (a.shape[0], a.shape[2], a.shape[1]) if trans_a else a.shape
    k2, n = (b.shape[2], b.shape[1]) if trans_b else b.shape[1:]
    if b.shape[0] != count or k != k2:
        raise ValueError(f"batched_gemm: op(a) is {count} matrices of {(m, k)} and op(b) "
                         f"{b.shape[0]} of {(k2, n)}; the counts and inner dimensions must agree")
    if out is None and accumulate:
        raise ValueError("batched_gemm: accumulate=True needs an out to add to")
    out = _result("out", out, (count, m, n), a.dtype, ("a", a), ("b", b))
    return _selected.kernels.batched_gemm(a, b, trans_a, trans_b, out, accumulate)


def _result(what, out, shape, dtype, *inputs):
    """The array a kernel writes: a new one of ``shape`` and ``dtype`` when ``out`` is None,
    else ``out``, checked by ``_check_result``."""
    if out is None:
        return np.empty(shape, dtype)
    _check_result(what, out, shape, dtype, *inputs)
    return out


def _check_result(what, out, shape, dtype, *inputs):
    """``out``, an array a kernel is to write, is a writeable, C-contiguous, aligned ndarray of
    ``shape`` and ``dtype`` that shares no memory with any of the ``(name, array)`` inputs."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype or not (out.flags.c_contiguous and out.flags.aligned):
        raise ValueError(f"{what} must be a C-contiguous {dtype} array of shape {shape}, got "
                         f"{out.dtype} {out.shape}" + ("" if out.flags.c_contiguous else ", not C-contiguous"))
    if not out.flags.writeable:
        raise ValueError(f"{what} is read-only")
    for label, x in inputs:
        if x is not None and np.may_share_memory(out, x):
            raise ValueError(f"{what} overlaps {label}: the result would overwrite its own input")


def linear_backward(grad, x, weight, need_dx=True, need_dw=True, need_db=True):
    """nn.Linear's gradients from dL/dy ``grad`` (N, out), the layer's input ``x`` (N, in) and its
    ``weight`` (out, in): ``(dx, dw, db) = (grad @ weight, grad.T @ x, grad summed over the N
    rows)``, each a new array, or None where its ``need_`` flag is false. One call instead of two
    products and a sum: on the C backend that is ~3 us less Python per layer and step."""
    _check_float_arrays(2, ("grad", grad), ("x", x), ("weight", weight))
    if not grad.dtype == x.dtype == weight.dtype:
        raise TypeError(f"linear_backward: grad, x and weight must share a dtype, got {grad.dtype}, "
                        f"{x.dtype} and {weight.dtype}")
    if x.shape[0] != grad.shape[0] or weight.shape != (grad.shape[1], x.shape[1]):
        raise ValueError(f"linear_backward: grad {grad.shape}, x {x.shape} and weight {weight.shape} "
                         f"do not fit: they must be (N, out), (N, in) and (out, in)")
    return _selected.kernels.linear_backward(grad, x, weight, need_dx, need_dw, need_db)


def ger(A, x, y, alpha=1.0):
    """Rank-1 update in place: ``A += alpha * outer(x, y)``; returns ``A``."""
    _check_float_arrays(1, ("x", x), ("y", y))
    alpha = _real_number("alpha", alpha)
    _check_out("A", A, (x.shape[0], y.shape[0]), x.dtype, [("x", x), ("y", y)])
    if y.dtype != x.dtype:
        raise TypeError(f"A, x and y must share a dtype, got {A.dtype}, {x.dtype}, {y.dtype}")
    return _selected.kernels.ger(A, x, y, alpha)


def axpy_many(alpha, xs, ys):
    """``ys[i] += alpha * xs[i]`` for every pair, in place and without temporaries: the SGD update
    of all parameters of a model at once (PyTorch's optimizers batch it the same way with their
    "foreach" ops)."""
    alpha = _real_number("alpha", alpha)
    _check_pairs("axpy_many", xs, ys)
    _selected.kernels.axpy_many(alpha, xs, ys)


def axpby_many(alpha, xs, beta, ys):
    """``ys[i] = alpha * xs[i] + beta * ys[i]`` for every pair, in place and without temporaries:
    SGD's momentum buffers, ``buf = momentum * buf + (1 - dampening) * g``, all in one call."""
    alpha, beta = _real_number("alpha", alpha), _real_number("beta", beta)
    _check_pairs("axpby_many", xs, ys)
    _selected.kernels.axpby_many(alpha, xs, beta, ys)


def _check_pairs(name, xs, ys):
    if len(xs) != len(ys):
        raise ValueError(f"{name}: {len(xs)} x arrays but {len(ys)} y arrays")
    for x, y in zip(xs, ys):
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
                and x.dtype in _FLOAT_DTYPES and y.dtype in _FLOAT_DTYPES):
            _check_float_arrays(None, ("x", x), ("y", y))   # tested inline first: runs per parameter
        if x.shape != y.shape or x.dtype != y.dtype:
            raise ValueError(f"{name}: x is {x.shape} {x.dtype} but y is {y.shape} {y.dtype}")
        if not y.flags.writeable:
            raise ValueError(f"{name}: y is read-only")


def relu(z):
    """``max(z, 0)`` elementwise, in a new array; NaN stays NaN. Any dtype: the C backend hands
    integer arrays and strided views to NumPy."""
    return _selected.kernels.relu(np.asarray(z))   # an op on 0-d arrays may have made a NumPy scalar


def relu_backward(y, grad):
    """dL/dz in a new array, as PyTorch: 0 where the ReLU's output ``y`` <= 0 (even where ``grad``
    is inf or NaN), ``grad`` where y > 0 or y is NaN."""
    y, grad = np.asarray(y), np.asarray(grad)
    _check_float_arrays(None, ("y", y), ("grad", grad))
    if y.shape != grad.shape:
        raise ValueError(f"relu_backward: y has shape {y.shape} but grad has shape {grad.shape}")
    return _selected.kernels.relu_backward(y, grad)


def cross_entropy(logits, target):
    """Softmax cross-entropy row by row, for (N, C) ``logits`` and N int64 class labels: returns
    ``(losses, dlogits)`` with ``losses[i] = -log softmax(logits[i])[target[i]]`` and each loss's
    gradient ``dlogits[i] = softmax(logits[i]) - onehot(target[i])``, computed in the same pass.
    A label outside 0..C-1 raises IndexError."""
    _check_float_arrays(2, ("logits", logits))
    if not isinstance(target, np.ndarray) or target.dtype != np.int64:
        raise TypeError(f"target must be an int64 numpy.ndarray of class labels, got "
                        f"{getattr(target, 'dtype', type(target).__name__)}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy: logits of shape {logits.shape} need {logits.shape[0]} "
                         f"labels, got target of shape {target.shape}")
    losses, dlogits, bad = _selected.kernels.cross_entropy(logits, target)
    if bad >= 0:
        raise label_out_of_range(target[bad], logits.shape[1])
    return losses, dlogits


def label_out_of_range(label, n_classes):
    """The IndexError for a cross-entropy label outside 0..n_classes-1 (here, and when a jitted
    step's replay finds one)."""
    return IndexError(f"cross_entropy: target {label} is out of range for {n_classes} classes "
                      f"(labels must be in 0..{n_classes - 1})")


def total(x, divisor=1):
    """``sum(x) / divisor`` as a 0-d array of x's dtype (divisor 1: the sum of a batch's losses;
    len(x): their mean), summed in float64."""
    _check_float_arrays(1, ("x", x))
    divisor = _real_number("divisor", divisor)
    return _selected.kernels.total(x, divisor)


def scale_rows(x, g, divisor=1):
    """A new array: each row of the 2-D ``x`` times ``g / divisor``, where ``g`` is one number (a
    0-d array) or one per row: cross-entropy's backward, (softmax - onehot) * dL/dL_n."""
    _check_float_arrays(2, ("x", x))
    _check_float_arrays(None, ("g", g))
    divisor = _real_number("divisor", divisor)
    if g.dtype != x.dtype or g.shape not in ((), (x.shape[0],)):
        raise ValueError(f"scale_rows: g must be {x.dtype} of shape () or {(x.shape[0],)}, got "
                         f"{g.dtype} {g.shape}")
    return _selected.kernels.scale_rows(x, g, divisor)


# --- windows: convolution as a matrix product, max pooling ----------------------------------------
def _check_window(shape, kernel, stride, padding, dilation):
    """The geometry of a kernel's windows over images of ``shape`` (N, C, H, W), as the 14 numbers
    the kernels take: N, C, H, W, kh, kw, sh, sw, dh, dw, top, left, OH, OW. ``kernel``, ``stride``
    and ``dilation`` are pairs of positive ints, ``padding`` ((top, bottom), (left, right)) of
    non-negative ones (as ``nn.functional`` passes them)."""
    def pair(what, value, least):
        if type(value) is tuple and len(value) == 2:
            first, second = value
            if type(first) is int and type(second) is int and first >= least and second >= least:
                return value   # the usual case, tested inline first: this runs per layer and step
            if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= least
                   for v in value):
                return int(first), int(second)
        raise ValueError(f"{what} must be a pair of ints of at least {least}, got {value!r}")

    (kh, kw), (sh, sw), (dh, dw) = (pair("kernel", kernel, 1), pair("stride", stride, 1),
                                    pair("dilation", dilation, 1))
    if not (isinstance(padding, tuple) and len(padding) == 2):
        raise ValueError(f"padding must be ((top, bottom), (left, right)), got {padding!r}")
    (top, bottom), (left, right) = pair("padding[0]", padding[0], 0), pair("padding[1]", padding[1], 0)
    n, c, h, w = shape
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"a kernel of {(kh, kw)} with dilation {(dh, dw)} does not fit in images of "
                         f"{(h, w)} padded by {padding}: the output would be empty")
    return n, c, h, w, kh, kw, sh, sw, dh, dw, top, left, oh, ow


def _check_images(what, x):
    _check_float_arrays(4, (what, x))
    if 0 in x.shape:
        raise ValueError(f"{what} must not be empty, got shape {x.shape}")


def im2col(x, kernel, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1)):
    """The windows a convolution reads from images ``x`` (N, C, H, W), laid out as the columns of
    a matrix: returns ``cols`` of shape (C*kh*kw, N, OH, OW), a new array, with

        cols[(c*kh + p)*kw + q, n, i, j] = x[n, c, i*sh + p*dh - top, j*sw + q*dw - left]

    (0 where that is in the padding). Filters ``w`` (O, C, kh, kw) then convolve x in one
    product: ``w.reshape(O, -1) @ cols.reshape(C*kh*kw, -1)`` is the output, as (O, N, OH, OW)."""
    _check_images("x", x)
    window = _check_window(x.shape, kernel, stride, padding, dilation)
    return _selected.kernels.im2col(x, window)


def _check_shape(what, shape, axes="(N, C, H, W)"):
    """``shape`` is a tuple of 4 positive ints (the shape of images, or of a convolution's
    output: ``axes`` names them); returns it as Python ints."""
    if not (isinstance(shape, tuple) and len(shape) == 4
            and all(isinstance(v, (int, np.integer)) and v > 0 for v in shape)):
        raise ValueError(f"{what} must be a tuple of 4 positive ints {axes}, got {shape!r}")
    return tuple(int(v) for v in shape)


def col2im(cols, x_shape, kernel, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1)):
    """The adjoint of ``im2col`` (the images' gradient from the columns' gradient): a new array of
    ``x_shape`` (N, C, H, W) in which every entry of ``cols`` is added onto the pixel ``im2col``
    read it from (where windows overlap, the entries add; the padding's share is dropped)."""
    _check_float_arrays(4, ("cols", cols))
    x_shape = _check_shape("x_shape", x_shape)
    window = _check_window(x_shape, kernel, stride, padding, dilation)
    n, c, _, _, kh, kw = window[:6]
    expected = (c * kh * kw, n) + window[12:]
    if cols.shape != expected:
        raise ValueError(f"col2im: cols must have shape {expected} for images of {x_shape} and a "
                         f"kernel of {(kh, kw)}, got {cols.shape}")
    return _selected.kernels.col2im(cols, window)


def max_pool(x, kernel, stride, padding=((0, 0), (0, 0))):
    """Max pooling of images ``x`` (N, C, H, W): returns ``(y, argmax)``, new arrays of shape (N,
    C, OH, OW): each window's largest element, and where it is in its plane (``row * W + column``;
    the first of equal ones in row-major order, the first NaN over any number, never the padding,
    which must be smaller than the kernel on every side)."""
    _check_images("x", x)
    window = _check_window(x.shape, kernel, stride, padding, (1, 1))
    if any(side >= k for sides, k in zip(padding, kernel) for side in sides):
        raise ValueError(f"max_pool: the padding {padding} must be smaller than the kernel {kernel} "
                         f"on every side (else a window could hold only padding)")
    return _selected.kernels.max_pool(x, window)


def max_pool_backward(grad, argmax, x_shape):
    """dL/dx for ``max_pool``: a new array of ``x_shape`` (N, C, H, W), zero but where an arg-max
    is: there, the sum of the gradients ``grad`` (N, C, OH, OW) of the outputs it was the maximum
    of."""
    _check_float_arrays(4, ("grad", grad))
    if not (isinstance(argmax, np.ndarray) and argmax.dtype == np.int64 and argmax.shape == grad.shape):
        raise TypeError(f"argmax must be an int64 numpy.ndarray of grad's shape {grad.shape}, got "
                        f"{getattr(argmax, 'dtype', type(argmax).__name__)} "
                        f"{getattr(argmax, 'shape', '')}")
    if not (isinstance(x_shape, tuple) and len(x_shape) == 4 and x_shape[:2] == grad.shape[:2]
            and all(isinstance(v, (int, np.integer)) and v > 0 for v in x_shape)):
        raise ValueError(f"x_shape must be 4 positive ints (N, C, H, W) with grad's N and C "
                         f"{grad.shape[:2]}, got {x_shape!r}")
    # the kernel checks each position as it uses it (checking first, in NumPy, took two passes)
    dx, outside = _selected.kernels.max_pool_backward(grad, argmax, tuple(int(v) for v in x_shape))
    if outside:
        raise argmax_outside_planes(x_shape[2:])
    return dx


def argmax_outside_planes(plane_shape):
    """The IndexError for a ``max_pool_backward`` argmax holding positions outside the planes of
    ``plane_shape`` (H, W) (here, and when a jitted step's replay finds one)."""
    h, w = plane_shape
    return IndexError(f"max_pool_backward: argmax holds positions outside the {(h, w)} planes "
                      f"(0..{h * w - 1})")


# --- Winograd's minimal filtering: a convolution on tiles (see fast.WinogradConv2d) ---------------
WINOGRAD_TILE = 8   # each tile is 8 x 8 input pixels (the C kernels hold one in registers)


def _check_winograd_matrix(what, a, rows, dtype):
    _check_float_arrays(2, (what, a))
    if a.dtype != dtype or a.shape[1] != WINOGRAD_TILE or not (
            a.shape[0] == rows if rows else 2 <= a.shape[0] < WINOGRAD_TILE):
        wanted = f"({rows}, {WINOGRAD_TILE})" if rows else f"(m, {WINOGRAD_TILE}), 2 <= m < {WINOGRAD_TILE}"
        raise ValueError(f"{what} must be {dtype} of shape {wanted}, got {a.dtype} {a.shape}")


def _winograd_geometry(x_shape, kernel, padding):
    """For a convolution of images ``x_shape`` by a square ``kernel`` of r = 2..7 on Winograd's
    tiles (stride 1, no dilation): its window, m = 9 - r (outputs a tile, each way) and the
    number of tiles an image has."""
    window = _check_window(x_shape, kernel, (1, 1), padding, (1, 1))
    if not (kernel[0] == kernel[1] and 2 <= kernel[0] < WINOGRAD_TILE):
        raise ValueError(f"Winograd's {WINOGRAD_TILE}x{WINOGRAD_TILE} tiles take a square kernel of "
                         f"2 to {WINOGRAD_TILE - 1}, not {kernel}")
    m = WINOGRAD_TILE + 1 - kernel[0]
    th, tw = winograd_tile_counts(*window[12:], m)
    return window, m, th * tw


def winograd_input(x, BT, kernel, padding=((0, 0), (0, 0))):
    """The input side of Winograd's convolution by a square ``kernel`` of r = 2..7: every 8 x 8
    tile d of images ``x`` (N, C, H, W), read m = 9 - r pixels apart (tile (ty, tx) starts at row
    ty m - top and column tx m - left of the plane; 0 outside it), as ``BT d BT^T``. Returns V
    (64, C, N*TH*TW), TH x TW tiles an image: ``V[8 a + b, c, (n TH + ty) TW + tx]`` is element
    (a, b) of the tile's transform."""
    _check_images("x", x)
    _check_winograd_matrix("BT", BT, WINOGRAD_TILE, x.dtype)
    window, m, tiles = _winograd_geometry(x.shape, kernel, padding)
    v = np.empty((WINOGRAD_TILE ** 2, x.shape[1], x.shape[0] * tiles), x.dtype)
    return _selected.kernels.winograd_input(x, window, BT, m, v)


def winograd_input_backward(dv, BT, x_shape, kernel, padding=((0, 0), (0, 0)), out=None):
    """The adjoint of ``winograd_input``: an array of ``x_shape`` (N, C, H, W), new or ``out``,
    each tile's ``BT^T dV BT`` added onto the pixels it was read from (tiles overlap; the padding's
    share is dropped)."""
    _check_float_arrays(3, ("dv", dv))
    _check_winograd_matrix("BT", BT, WINOGRAD_TILE, dv.dtype)
    x_shape = _check_shape("x_shape", x_shape)
    window, m, tiles = _winograd_geometry(x_shape, kernel, padding)
    expected = (WINOGRAD_TILE ** 2, x_shape[1], x_shape[0] * tiles)
    if dv.shape != expected:
        raise ValueError(f"winograd_input_backward: dv must have shape {expected} for images of "
                         f"{x_shape} and a kernel of {kernel}, got {dv.shape}")
    out = _result("out", out, x_shape, dv.dtype, ("dv", dv), ("BT", BT))
    return _selected.kernels.winograd_input_backward(dv, window, BT, m, out)


def _check_winograd_y_shape(y_shape, AT, tiles_held):
    """``y_shape`` is an output's (N, O, OH, OW), and ``tiles_held`` the shape of its tiles'
    array, (64, O, N*TH*TW) for m x m tiles (m from ``AT``); returns y_shape as Python ints."""
    n, o, oh, ow = y_shape = _check_shape("y_shape", y_shape, "(N, O, OH, OW)")
    m = AT.shape[0]
    expected = (WINOGRAD_TILE ** 2, o, n * math.prod(winograd_tile_counts(oh, ow, m)))
    if tiles_held != expected:
        raise ValueError(f"M (the tiles' products) must have shape {expected} for outputs of "
                         f"{y_shape} in {m}x{m} tiles, got {tiles_held}")
    return y_shape


def winograd_output(M, AT, y_shape, bias=None, out=None):
    """The output side of Winograd's convolution: from the tiles' products ``M`` (64, O, N*TH*TW),
    laid out as ``winograd_input``'s V, an array y of ``y_shape`` (N, O, OH, OW), new or ``out``:
    each tile's ``AT M AT^T`` (m x m outputs; the part past the edge dropped), plus ``bias[o]``
    (or None)."""
    _check_float_arrays(3, ("M", M))
    _check_winograd_matrix("AT", AT, None, M.dtype)
    y_shape = _check_winograd_y_shape(y_shape, AT, M.shape)
    if bias is not None:
        _check_float_arrays(1, ("bias", bias))
        if bias.dtype != M.dtype or bias.shape != (y_shape[1],):
            raise ValueError(f"winograd_output: bias must be {M.dtype} of shape {(y_shape[1],)}, "
                             f"got {bias.dtype} {bias.shape}")
    out = _result("out", out, y_shape, M.dtype, ("M", M), ("bias", bias))
    return _selected.kernels.winograd_output(M, AT, bias, out)


def winograd_output_backward(grad, AT, need_sums=True, out=None, sums=None):
    """The adjoint of ``winograd_output``: from ``grad`` (N, O, OH, OW), returns ``(dM, sums)``:
    dM (64, O, N*TH*TW), new or ``out``, holds each m x m tile's ``AT^T dL/dy AT`` (0 past the
    edge); ``sums``, each channel's total (dL/dbias), is a new array, or None when ``need_sums`` is
    false, or, when an array of O numbers is given, the totals are added to it (a convolution
    taken a few images at a time)."""
    _check_float_arrays(4, ("grad", grad))
    _check_winograd_matrix("AT", AT, None, grad.dtype)
    _check_flag("need_sums", need_sums)
    n, o, oh, ow = grad.shape
    shape = (WINOGRAD_TILE ** 2, o, n * math.prod(winograd_tile_counts(oh, ow, len(AT))))
    out = _result("out", out, shape, grad.dtype, ("grad", grad))
    add = sums is not None
    if add:
        _check_result("sums", sums, (o,), grad.dtype, ("grad", grad), ("out", out))
    elif need_sums:
        sums = np.empty(o, grad.dtype)
    return _selected.kernels.winograd_output_backward(grad, AT, out, sums, add)


# --- a convolution's output: the GEMM's layout and PyTorch's ------------------------------------------
def batch_major(rows, bias=None):
    """A convolution's output as PyTorch lays it out, from the GEMM's: ``rows`` (O, N, ...) holds
    each filter's row of outputs for every image (``w @ cols``, see ``im2col``); returns a new
    array y (N, O, ...) with ``y[n, o] = rows[o, n] + bias[o]`` (``bias``: O numbers, or None)."""
    _check_float_arrays(None, ("rows", rows))
    if rows.ndim < 2:
        raise ValueError(f"batch_major: rows must have at least 2 dimensions (O, N, ...), got "
                         f"shape {rows.shape}")
    if bias is not None:
        _check_float_arrays(1, ("bias", bias))
        if bias.dtype != rows.dtype or bias.shape != rows.shape[:1]:
            raise ValueError(f"batch_major: bias must be {rows.dtype} of shape {rows.shape[:1]}, "
                             f"got {bias.dtype} {bias.shape}")
    return _selected.kernels.batch_major(rows, bias)


def channel_major(grad, need_sums=True):
    """The adjoint of ``batch_major``: from ``grad`` (N, O, ...), dL/dy of a convolution's output,
    returns ``(rows, sums)``: rows (O, N, ...) with ``rows[o, n] = grad[n, o]``, the gradient in
    the GEMM's layout, and ``sums``, each channel's total over the images and pixels (dL/dbias:
    the bias was added to every one of them), or None when ``need_sums`` is false."""
    _check_float_arrays(None, ("grad", grad))
    if grad.ndim < 2:
        raise ValueError(f"channel_major: grad must have at least 2 dimensions (N, O, ...), got "
                         f"shape {grad.shape}")
    _check_flag("need_sums", need_sums)
    return _selected.kernels.channel_major(grad, need_sums)
