"""The fast layer: a few ops fused into C kernel calls, under the plain ones in ``ops.py``.

Each op here computes exactly what a composition of plain ops computes (its docstring says which,
and ``tests/test_fast.py`` checks values and gradients equal), in fewer and faster steps:

- ``Linear``: ``x @ W.T + b`` in one GEMM pass, and its three gradients in one kernel call;
- ``ReLU``: ``ops.ReLU`` on the C kernels (NumPy's ``maximum`` with a scalar is not vectorised);
- ``CrossEntropy``: ``ops.LogSoftmax`` then ``ops.NLLLoss`` in one pass that also leaves
  ``softmax - onehot`` ready for backward;
- ``sgd_update``: ``p -= lr * d`` for every parameter of a model in one call, and
  ``momentum_update``: ``buf = momentum * buf + (1 - dampening) * g`` for every buffer in one;
- ``Conv2d``: ``ops.Conv2d`` as one matrix product (im2col), on the C GEMM, and
  ``WinogradConv2d``: the same by Winograd's minimal filtering, with fewer multiplications, where
  ``winograd_pays`` (stride 1, a square kernel of 2-7, enough channels and images);
- ``MaxPool2d``: ``ops.MaxPool2d`` in one C pass each way.

Which path runs is decided in one place, ``enabled()``, asked by ``nn.functional`` and ``optim``:
the fast layer when the C kernels are the backend in use and ``set_fast`` has not turned it off;
the plain path otherwise (the NumPy backend, no compiler, or ``tinygrad_edu.set_fast(False)`` to
watch the plain ops run on the C build).
"""

import functools
import math
from fractions import Fraction

import numpy as np

from . import backend, ops
from .tensor import Function, computed

_switched_on = True   # set_fast's setting, for the whole process


def enabled():
    """Whether the fast layer runs: switched on, and the C kernels are the backend in use."""
    return _switched_on and backend.name() == "c"


class set_fast:
    """``set_fast(False)`` turns the fast layer off for the whole process, ``set_fast(True)`` back
    on; ``with set_fast(False): ...`` turns it off for a block and restores the setting after it
    (as ``torch.set_grad_enabled`` works both ways). One setting for all threads."""

    def __init__(self, flag):
        global _switched_on
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"set_fast takes True or False, got {flag!r}")
        self.previous, _switched_on = _switched_on, bool(flag)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _switched_on
        _switched_on = self.previous
        return False


class Linear(Function):
    """``ops.Linear`` (y = x W^T + b;  dL/dx = dL/dy W,  dL/dW = (dL/dy)^T x,  dL/db = sum of
    dL/dy) with the bias added inside the GEMM's pass and the three gradients from one kernel
    call (``backend.linear_backward``), so the layer costs one call each way."""

    kernel_only = True   # tinygrad_edu.jit replays its kernel calls

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        ops.check_linear(x, weight, bias)
        ctx.save_for_backward(x, weight)
        x2 = x if x.ndim == 2 else _as_rows(x)   # extra leading dims: a batch
        y = backend.gemm(x2, weight, trans_b=True, bias=bias)
        return y if x.ndim == 2 else y.reshape(x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved
        needs = ctx.needs_input_grad
        x2 = x if x.ndim == 2 else _as_rows(x)
        g2 = grad if grad.ndim == 2 else _as_rows(grad)
        dx, dw, db = backend.linear_backward(g2, x2, weight, needs[0], needs[1],
                                             len(needs) > 2 and needs[2])
        if dx is not None and dx.shape != x.shape:
            dx = dx.reshape(x.shape)
        return dx, dw, db


def _as_rows(a):
    """``a`` (..., n) as rows (-1, n): a view where NumPy can make one (a contiguous array), else a
    copy made through ``computed`` (so that a jitted step copies the new values too)."""
    rows = a.reshape(-1, a.shape[-1])
    return rows if np.may_share_memory(rows, a) else computed(np.reshape, a, rows.shape)


class ReLU(Function):
    """``ops.ReLU`` (a = max(z, 0);  dL/dz = dL/da where a > 0, else 0) on the C kernels."""

    kernel_only = True   # tinygrad_edu.jit replays its kernel calls

    @staticmethod
    def forward(ctx, z):
        a = backend.relu(z)
        ctx.save_for_backward(a)
        return a

    @staticmethod
    def backward(ctx, grad):
        a, = ctx.saved
        return (backend.relu_backward(a, grad),)


class CrossEntropy(Function):
    """``ops.LogSoftmax`` (over the last axis) then ``ops.NLLLoss``: L_n = -log softmax(z_n)[t_n],
    then the batch's ``reduction``: "mean" L = (L_1 + ... + L_N) / N, "sum", or "none".

    dL_n/dz_n = softmax(z_n) - onehot(t_n). ``backend.cross_entropy`` computes it in the forward
    pass, with the losses (one C pass over the logits; it also checks every label), so backward
    only scales it by dL/dL_n: for the mean over N samples, (softmax(z) - onehot(t)) / N.
    """

    kernel_only = True   # tinygrad_edu.jit replays its kernel calls

    @staticmethod
    def forward(ctx, logits, target, reduction):
        z, labels = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)   # (C,): one row
        losses, ctx.dlogits = backend.cross_entropy(z, labels)   # L_n, and dL_n/dz_n per row
        ctx.shape, ctx.reduction = logits.shape, reduction
        if reduction == "none":
            return losses.reshape(target.shape)
        return backend.total(losses, float(len(losses)) if reduction == "mean" else 1.0)

    @staticmethod
    def backward(ctx, grad):
        # dL/dz_n = dL/dL_n * (softmax - onehot): one factor per row for "none", else dL/dL for
        # all (over N for the mean); a new array each time, as a retained graph may run it again
        per_row, grad = ctx.reduction == "none", np.asarray(grad)   # an op may hand a NumPy scalar
        dz = backend.scale_rows(ctx.dlogits, grad.reshape(-1) if per_row else grad,
                                float(len(ctx.dlogits)) if ctx.reduction == "mean" else 1.0)
        return (dz.reshape(ctx.shape),)


class Conv2d(Function):
    """``ops.Conv2d`` as a matrix product. ``backend.im2col`` lays every window of x out as one
    column of a matrix X (a row per kernel element c, p, q; a column per output pixel n, i, j), and
    with the filters as the rows of W (O, C kh kw) the convolution is ops.Linear's formula, the
    windows playing the batch:

        Y = W X + b            (Y: O rows, one column per output pixel)
        dL/dW = dL/dY X^T,     dL/dX = W^T dL/dY,     dL/db = the row sums of dL/dY,

    and ``backend.col2im`` adds dL/dX's columns back onto the pixels they were read from (the full
    correlation of ops.Conv2d's docstring). With G groups, group g's filters and input channels
    are row blocks of W and X: one product per group. Y comes out channel-major (O, N, OH, OW);
    ``backend.batch_major`` lays it out as PyTorch's (N, O, OH, OW) and adds b in the same pass,
    and ``backend.channel_major`` brings dL/dy back, summing dL/db on the way.
    """

    kernel_only = True   # tinygrad_edu.jit replays its kernel calls (and NumPy's products)

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1),
                groups=1):
        cols = backend.im2col(x, weight.shape[2:], stride, padding, dilation)   # (C kh kw, N, OH, OW)
        ctx.save_for_backward(weight)
        ctx.cols, ctx.x_shape, ctx.groups = cols, x.shape, groups
        ctx.window = (weight.shape[2:], stride, padding, dilation)
        y_rows = np.empty((weight.shape[0],) + cols.shape[1:], x.dtype)        # Y: (O, N, OH, OW)
        for w, X, Y in _group_blocks(weight.reshape(weight.shape[0], -1), cols, y_rows, groups):
            backend.gemm(w, X.reshape(len(X), -1), out=Y.reshape(len(Y), -1))
        return backend.batch_major(y_rows, bias)                 # (N, O, OH, OW), + b in the pass

    @staticmethod
    def backward(ctx, grad):
        weight, = ctx.saved
        needs, cols = ctx.needs_input_grad, ctx.cols
        # dL/dY (O, N, OH, OW) in the GEMM's layout, and dL/db (its row sums) in the same pass
        dy, db = backend.channel_major(grad, len(needs) > 2 and needs[2])
        dy_rows = dy.reshape(len(dy), -1)
        w_rows = weight.reshape(weight.shape[0], -1)
        dx = dw = None
        if needs[1]:
            dw = np.empty(w_rows.shape, weight.dtype)
            for dW, X, dY in _group_blocks(dw, cols, dy_rows, ctx.groups):
                backend.gemm(dY, X.reshape(len(X), -1), trans_b=True, out=dW)  # dL/dY X^T
            dw = dw.reshape(weight.shape)
        if needs[0]:
            dcols = np.empty(cols.shape, cols.dtype)
            for w, dX, dY in _group_blocks(w_rows, dcols, dy_rows, ctx.groups):
                backend.gemm(w, dY, trans_a=True, out=dX.reshape(len(dX), -1))  # W^T dL/dY
            dx = backend.col2im(dcols, ctx.x_shape, *ctx.window)
        return dx, dw, db


class WinogradConv2d(Function):
    """``ops.Conv2d`` with stride 1, no dilation, one group and a square kernel of r = 2..7, by
    Winograd's minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural
    Networks", 2015): fewer multiplications than the windows have elements.

    One row first. m = 9 - r outputs of a correlation, y_i = sum_k d_{i+k} g_k, read 8 inputs d.
    Taking them as a polynomial product evaluated at 8 points and interpolated back (Cook-Toom),

        y = A^T [(G g) * (B^T d)]        (* elementwise: 8 multiplications, not m r)

    with B^T (8 x 8), G (8 x r) and A^T (m x 8) fixed by the points (``winograd_matrices``).
    In 2-D the same is done along both axes of an 8 x 8 tile of the image:

        Y = A^T [ (G g G^T) * (B^T d B) ] A       (64 multiplications for m^2 outputs, not m^2 r^2)

    and summed over input channels c, the elementwise product becomes, for each of the 64 (a, b),
    a matrix product over channels: with U = G g G^T per filter (o, c), V = B^T d B per tile and
    channel, M_ab = U_ab V_ab ((O x C) @ (C x tiles)). The lecture CNN's conv2 (r = 5: 4 x 4
    outputs a tile) then takes 64 multiplications where im2col's product takes 400.

    Backward is each step's adjoint, in reverse, the transposes of the same matrices:

        dL/dM_ab = (A dL/dY A^T)_ab,   dL/dU_ab = dL/dM_ab V_ab^T,   dL/dV_ab = U_ab^T dL/dM_ab,
        dL/dg = G^T dL/dU G,           dL/dd = B dL/dV B^T (added where tiles overlap).

    The batch goes a few images at a time (``_winograd_chunks``), so that each chunk's products
    M, 64 / m^2 times the size of its output (4x for r = 5), stay in the cache between the kernels
    that write and read them.
    In float64 the result matches ``ops.Conv2d`` to ~1e-14; in float32 its rounding error is ~10x
    im2col's (the transforms add and subtract numbers up to ~5 times larger than the result)."""

    kernel_only = True   # tinygrad_edu.jit replays its kernel calls (and NumPy's products)

    @staticmethod
    def forward(ctx, x, weight, bias=None, padding=((0, 0), (0, 0))):
        o, c, r, _ = weight.shape
        AT, GG, BT = winograd_matrices(r, x.dtype)
        (oh, ow), tiles = _winograd_tiles(x.shape, r, padding)
        # U: (64, O, C), each filter's G g G^T (G g G^T = GG g, g as a column of r^2 numbers)
        u = backend.gemm(GG, weight.reshape(o * c, r * r), trans_b=True).reshape(-1, o, c)
        y = np.empty((x.shape[0], o, oh, ow), x.dtype)
        chunks = _winograd_chunks(x.shape[0], tiles, o, x.dtype)
        products = _Reused(x.dtype)   # M of a chunk: (64, O, tiles), in the same memory each time
        ctx.v = []
        for images in chunks:
            v = backend.winograd_input(x[images], BT, (r, r), padding)    # (64, C, tiles)
            M = backend.batched_gemm(u, v, out=products.array(len(v), o, v.shape[2]))
            backend.winograd_output(M, AT, y[images].shape, bias, out=y[images])
            ctx.v.append(v)
        ctx.u, ctx.chunks, ctx.x_shape, ctx.padding = u, chunks, x.shape, padding
        ctx.w_shape, ctx.matrices = weight.shape, (AT, GG, BT)
        return y

    @staticmethod
    def backward(ctx, grad):
        (AT, GG, BT), needs, u = ctx.matrices, ctx.needs_input_grad, ctx.u
        o, c, r, _ = ctx.w_shape
        need_db = len(needs) > 2 and needs[2]
        du = np.empty(u.shape, u.dtype) if needs[1] else None
        dx = np.empty(ctx.x_shape, u.dtype) if needs[0] else None
        db = None
        d_products, d_tiles = _Reused(u.dtype), _Reused(u.dtype)
        for k, (images, v) in enumerate(zip(ctx.chunks, ctx.v)):
            g = grad[images]
            dm, sums = backend.winograd_output_backward(   # the first chunk's dL/db, the rest added
                g, AT, need_db, out=d_products.array(len(v), o, v.shape[2]), sums=db if k else None)
            db = sums
            if needs[1]:   # dL/dU = dL/dM V^T, summed over the chunks
                backend.batched_gemm(dm, v, trans_b=True, out=du, accumulate=k > 0)
            if needs[0]:   # dL/dV = U^T dL/dM, then dL/dx
                dv = backend.batched_gemm(u, dm, trans_a=True, out=d_tiles.array(*v.shape))
                backend.winograd_input_backward(dv, BT, g.shape[:1] + ctx.x_shape[1:], (r, r),
                                                ctx.padding, out=dx[images])
        dw = None
        if needs[1]:   # dL/dg = G^T dL/dU G, all filters in one product
            dw = backend.gemm(du.reshape(len(du), o * c), GG, trans_a=True).reshape(ctx.w_shape)
        return dx, dw, db


# Winograd pays from this many input channels and this many tiles (N * TH * TW; one C kernel
# pass takes 16 float32 tiles at once). Measured one thread, float32, forward and backward, time
# against im2col's: conv2 of the lecture's CNN (20 -> 64, 5x5, 12x12) 0.48 at batch 64, 0.55 at
# 12, 0.68 at 4 (16 tiles), 1.22 at 2; 8 -> 16 channels 0.74 at batch 8, 0.92 at 4; but 1 -> 20
# (conv1) 2.9-4.1, and 4 -> 16 (3x3) 1.24-1.47: with few channels the transforms cost more
# than the product they shrink.
WINOGRAD_MIN_CHANNELS = 8
WINOGRAD_MIN_TILES = 16


def winograd_pays(x_shape, weight_shape, stride, padding, dilation, groups):
    """Whether a convolution of images ``x_shape`` by filters ``weight_shape`` goes to
    ``WinogradConv2d`` (it can, and is measured faster there) rather than ``Conv2d``."""
    r = weight_shape[2]
    if not (stride == (1, 1) and dilation == (1, 1) and groups == 1 and weight_shape[3] == r
            and 2 <= r <= 7 and x_shape[1] >= WINOGRAD_MIN_CHANNELS):
        return False
    return x_shape[0] * _winograd_tiles(x_shape, r, padding)[1] >= WINOGRAD_MIN_TILES


def _winograd_tiles(x_shape, r, padding):
    """((OH, OW), tiles an image) of a stride-1 convolution of images ``x_shape`` by an r x r
    kernel on Winograd's tiles of (9 - r) x (9 - r) outputs."""
    oh, ow = (x_shape[2 + i] + sum(padding[i]) - r + 1 for i in (0, 1))
    return (oh, ow), math.prod(backend.winograd_tile_counts(oh, ow, 9 - r))


# The batch is taken a few images at a time, so that a chunk's products M (64, O, tiles: 64 / m^2
# times the output, 4x for a 5x5 kernel) stay in the L2 cache from the product that writes them to
# the kernel that reads them, and the same memory serves every chunk. 1 MiB (16 images of conv2)
# ran the CNN's batch-64 step in 9.9 ms eagerly and 10.2 jitted, whole batches in 11.6 and 12.8
# (all five sizes in turns in one process; 0.5 MiB ran even with 1, 2 MiB and more slower).
WINOGRAD_CHUNK_BYTES = 1 << 20


def _winograd_chunks(n, tiles_per_image, o, dtype):
    """Slices of a batch of ``n`` images whose products (64, O, tiles) take at most
    WINOGRAD_CHUNK_BYTES each (at least one image)."""
    per_image = 64 * o * tiles_per_image * np.dtype(dtype).itemsize
    step = max(1, WINOGRAD_CHUNK_BYTES // per_image)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


class _Reused:
    """One block of memory that every chunk's temporary array is a view of."""

    def __init__(self, dtype):
        self.dtype, self.memory = dtype, np.empty(0, dtype)

    def array(self, *shape):
        size = math.prod(shape)
        if self.memory.size < size:
            self.memory = np.empty(size, self.dtype)
        return self.memory[:size].reshape(shape)


_WINOGRAD_POINTS = (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))   # and infinity


@functools.cache
def winograd_matrices(r, dtype):
    """``(A^T, G (x) G, B^T)`` for Winograd's F(m x m, r x r) on 8 x 8 tiles (m = 9 - r), from
    the points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity (small numbers: the smallest rounding
    error), computed exactly in fractions and then rounded to ``dtype``:

        A^T[i, j] = p_j^i                       (the product's value at p_j, interpolated back)
        G[j, k]   = p_j^k / prod_{l != j} (p_j - p_l)   (the filter polynomial at p_j, scaled)
        B^T[j]    = the coefficients of prod_{l != j} (x - p_l)   (Lagrange's basis polynomials)

    and the point at infinity as the last column of A^T and the last row of G and of B^T (the
    leading coefficients). G (x) G is the Kronecker product: G g G^T for an r x r filter g is
    (G (x) G) times g read row by row."""
    m, points = 9 - r, _WINOGRAD_POINTS
    at = [[p ** i for p in points] + [int(i == m - 1)] for i in range(m)]
    g = [[Fraction(p) ** k / math.prod(p - q for q in points if q != p) for k in range(r)]
         for p in points] + [[int(k == r - 1) for k in range(r)]]
    bt = [_coefficients([q for q in points if q != p]) + [0] for p in points]
    bt.append(_coefficients(points))
    at, g, bt = (np.array(a, dtype=float) for a in (at, g, bt))
    matrices = at.astype(dtype), np.kron(g, g).astype(dtype), bt.astype(dtype)
    for a in matrices:
        a.flags.writeable = False   # cached: shared by every call
    return matrices


def _coefficients(roots):
    """The coefficients (of x^0, x^1, ...) of prod (x - root)."""
    c = [Fraction(1)]
    for root in roots:
        c = [-root * c[0]] + [c[i - 1] - root * c[i] for i in range(1, len(c))] + [c[-1]]
    return c


def _group_blocks(filters, columns, outputs, groups):
    """For each of ``groups`` groups, its row blocks of the filters, the columns and the outputs."""
    f, c, o = len(filters) // groups, len(columns) // groups, len(outputs) // groups
    return [(filters[g * f:(g + 1) * f], columns[g * c:(g + 1) * c], outputs[g * o:(g + 1) * o])
            for g in range(groups)]


class MaxPool2d(Function):
    """``ops.MaxPool2d`` (each window's largest element; its gradient goes to that element, the
    first of equal ones) in one C pass each way: ``backend.max_pool`` records where each maximum
    is, and ``backend.max_pool_backward`` adds the gradients there."""

    kernel_only = True   # tinygrad_edu.jit replays its kernel calls

    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        y, ctx.argmax = backend.max_pool(x, kernel, stride, padding)
        ctx.shape = x.shape
        return y

    @staticmethod
    def backward(ctx, grad):
        return (backend.max_pool_backward(grad, ctx.argmax, ctx.shape),)


def sgd_update(lr, directions, weights):
    """``w -= lr * d`` for every (d, w) pair, in place, in one C call without temporaries
    (PyTorch's optimizers batch their updates the same way: "foreach")."""
    backend.axpy_many(-lr, directions, weights)


def momentum_update(momentum, dampening, grads, buffers):
    """``buf = momentum * buf + (1 - dampening) * g`` for every (g, buf) pair, in place, in one C
    call without temporaries: SGD's momentum buffers, before ``sgd_update`` steps along them."""
    backend.axpby_many(1 - dampening, grads, momentum, buffers)
