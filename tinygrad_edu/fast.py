"""The fast layer: a few ops fused into C kernel calls, under the plain ones in ``ops.py``.

Each op here computes exactly what a composition of plain ops computes (its docstring says which,
and ``tests/test_fast.py`` checks values and gradients equal), in fewer and faster steps:

- ``Linear``: ``x @ W.T + b`` in one GEMM pass, and its three gradients in one kernel call;
- ``ReLU``: ``ops.ReLU`` on the C kernels (NumPy's ``maximum`` with a scalar is not vectorised);
- ``CrossEntropy``: ``ops.LogSoftmax`` then ``ops.NLLLoss`` in one pass that also leaves
  ``softmax - onehot`` ready for backward;
- ``sgd_update``: ``p -= lr * d`` for every parameter of a model in one call, and
  ``momentum_update``: ``buf = momentum * buf + (1 - dampening) * g`` for every buffer in one;
- ``Conv2d``: ``ops.Conv2d`` as one matrix product (im2col), on the C GEMM;
- ``MaxPool2d``: ``ops.MaxPool2d`` in one C pass each way.

Which path runs is decided in one place, ``enabled()``, asked by ``nn.functional`` and ``optim``:
the fast layer when the C kernels are the backend in use and ``set_fast`` has not turned it off;
the plain path otherwise (the NumPy backend, no compiler, or ``tinygrad_edu.set_fast(False)`` to
watch the plain ops run on the C build).
"""

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
