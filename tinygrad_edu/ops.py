"""Every differentiable op: forward and backward side by side.

Notation follows the lecture: for an op ``y = f(x)`` and a loss ``L``, ``backward`` receives
``grad = dL/dy`` and returns ``dL/dx = dL/dy * dy/dx`` (the chain rule). Each docstring gives
``dy/dx``, and ``backward`` is that formula written in NumPy, one line per gradient. Gradients
may come back in the output's broadcast shape: the engine's ``unbroadcast`` sums them down to
each input's shape, so no op here has to.

This file is the plain path: NumPy only. ``fast.py`` holds faster versions of a few ops (nn.Linear,
ReLU, cross-entropy) on the C kernels, each tested equal to its plain form here.
"""

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .tensor import Function


def _axes(dim, ndim):
    """``dim`` (None, int or tuple) as a tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return tuple(sorted(d % ndim if ndim else 0 for d in dims))


def _expand_reduced(grad, shape, axes, keepdim):
    """Give a reduced gradient its reduced axes back and copy it along them, to ``shape``."""
    if not keepdim:
        grad = grad.reshape([1 if axis in axes else n for axis, n in enumerate(shape)])
    expanded = np.empty(shape, grad.dtype)
    expanded[...] = grad  # NumPy broadcasting does the copying (np.broadcast_to is 10x slower)
    return expanded


# --- arithmetic -------------------------------------------------------------------------------
class Add(Function):
    """y = a + b;  dy/da = 1, dy/db = 1."""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


class Sub(Function):
    """y = a - b;  dy/da = 1, dy/db = -1."""

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, grad):
        return grad, (-grad if ctx.needs_input_grad[1] else None)


class Neg(Function):
    """y = -x;  dy/dx = -1."""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, grad):
        return (-grad,)


class Mul(Function):
    """y = a * b;  dy/da = b, dy/db = a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        da = grad * b if ctx.needs_input_grad[0] else None
        db = grad * a if ctx.needs_input_grad[1] else None
        return da, db


class Div(Function):
    """y = a / b;  dy/da = 1 / b, dy/db = -a / b^2."""

    @staticmethod
    def forward(ctx, a, b):
        if a.dtype.kind in "iub" and b.dtype.kind in "iub":
            a = a.astype(np.float32)  # true division of integers gives float32, as in PyTorch
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        da = grad / b if ctx.needs_input_grad[0] else None
        db = -grad * a / (b * b) if ctx.needs_input_grad[1] else None
        return da, db


class Pow(Function):
    """y = x^p for a constant p;  dy/dx = p x^(p-1)."""

    @staticmethod
    def forward(ctx, x, exponent):
        ctx.save_for_backward(x)
        ctx.p = exponent
        return x ** exponent

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved
        return (grad * ctx.p * x ** (ctx.p - 1),)


class Cast(Function):
    """y = x converted to another float dtype (also a copy: ``clone``);  dy/dx = 1."""

    @staticmethod
    def forward(ctx, x, dtype):
        return x.astype(dtype, copy=True)

    @staticmethod
    def backward(ctx, grad):
        return (grad,)  # the engine casts the gradient back to x's dtype


# --- matrix products --------------------------------------------------------------------------
def _as_matrices(ctx, a, b):
    """A vector on the left of @ is a row (1, n), on the right a column (n, 1)."""
    return (a[None, :] if ctx.a_vec else a), (b[:, None] if ctx.b_vec else b)


class MatMul(Function):
    """Y = A @ B;  dL/dA = dL/dY @ B^T,  dL/dB = A^T @ dL/dY.

    1-D operands follow NumPy and PyTorch: a vector on the left is a row (1, n), on the right a
    column (n, 1), and that axis is dropped from the result. More than two dimensions are batches.
    """

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul needs at least 1-D operands, got a 0-d tensor")
        ctx.save_for_backward(a, b)
        ctx.a_vec, ctx.b_vec = a.ndim == 1, b.ndim == 1
        a2, b2 = _as_matrices(ctx, a, b)
        if a2.shape[-1] != b2.shape[-2]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not line up "
                             f"({a2.shape[-1]} != {b2.shape[-2]})")
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        A, B = _as_matrices(ctx, *ctx.saved)
        G = grad                                    # as a matrix (or a stack of them), like A @ B:
        if ctx.a_vec:
            G = np.expand_dims(G, -1 if ctx.b_vec else -2)
        if ctx.b_vec:
            G = G[..., None]
        dA = G @ np.swapaxes(B, -1, -2) if ctx.needs_input_grad[0] else None   # dL/dA = dL/dY B^T
        dB = np.swapaxes(A, -1, -2) @ G if ctx.needs_input_grad[1] else None   # dL/dB = A^T dL/dY
        if ctx.a_vec and dA is not None:
            dA = dA[..., 0, :]                      # back to a vector
        if ctx.b_vec and dB is not None:
            dB = dB[..., 0]
        return dA, dB


def check_linear(x, weight, bias):
    """The shapes and dtypes of a linear layer's arguments, named in the error (both paths)."""
    if x.ndim == 0:
        raise ValueError(f"linear: the input is a 0-d tensor (a single number); it needs at "
                         f"least one dimension of {weight.shape[1]} features")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) but the "
                         f"weight expects {weight.shape[1]} (weight shape {weight.shape})")
    if x.dtype != weight.dtype:
        raise TypeError(f"linear: input dtype {x.dtype} differs from weight dtype "
                        f"{weight.dtype}; convert with .float() or .double()")
    if bias is not None and (bias.shape != weight.shape[:1] or bias.dtype != weight.dtype):
        raise ValueError(f"linear: bias must have shape {weight.shape[:1]} and dtype "
                         f"{weight.dtype} (from the weight), got {bias.shape} {bias.dtype}")


class Linear(Function):
    """y = x W^T + b, with W of shape (out, in) as in ``nn.Linear`` (one row of x per sample).

    dL/dx = dL/dy W,   dL/dW = (dL/dy)^T x,   dL/db = sum over the batch of dL/dy.
    """

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        check_linear(x, weight, bias)
        ctx.save_for_backward(x, weight)
        y = x @ weight.T
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx, grad):
        x, W = ctx.saved
        needs = ctx.needs_input_grad                    # for (x, W) or (x, W, b)
        g2 = grad.reshape(-1, grad.shape[-1])           # rows of dL/dy (more leading dims: a batch)
        x2 = x.reshape(-1, x.shape[-1])
        dx = grad @ W if needs[0] else None             # dL/dx = dL/dy W
        dW = g2.T @ x2 if needs[1] else None            # dL/dW = (dL/dy)^T x
        db = g2.sum(axis=0) if len(needs) > 2 and needs[2] else None   # dL/db = sum of dL/dy
        return dx, dW, db


class Outer(Function):
    """Y = a b^T for vectors a (m,) and b (n,);  dL/da = dL/dY b,  dL/db = (dL/dY)^T a."""

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim != 1 or b.ndim != 1:
            raise ValueError(f"outer needs two 1-D tensors, got shapes {a.shape} and {b.shape}")
        ctx.save_for_backward(a, b)
        return np.outer(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        da = grad @ b if ctx.needs_input_grad[0] else None     # dL/da = dL/dY b
        db = grad.T @ a if ctx.needs_input_grad[1] else None   # dL/db = (dL/dY)^T a
        return da, db


# --- reductions -------------------------------------------------------------------------------
class Sum(Function):
    """y = sum_i x_i;  dy/dx_i = 1: the gradient is copied back to every summed element."""

    @staticmethod
    def forward(ctx, x, dim, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = x.shape, _axes(dim, x.ndim), keepdim
        y = x.sum(axis=ctx.axes, keepdims=keepdim)
        return np.asarray(y, dtype=np.int64) if x.dtype.kind in "iub" else np.asarray(y)

    @staticmethod
    def backward(ctx, grad):
        return (_expand_reduced(grad, ctx.shape, ctx.axes, ctx.keepdim),)


class Mean(Function):
    """y = (1/n) sum_i x_i;  dy/dx_i = 1/n."""

    @staticmethod
    def forward(ctx, x, dim, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = x.shape, _axes(dim, x.ndim), keepdim
        ctx.n = math.prod(x.shape[a] for a in ctx.axes)
        return np.asarray(x.sum(axis=ctx.axes, keepdims=keepdim) / ctx.n)

    @staticmethod
    def backward(ctx, grad):
        return (_expand_reduced(grad / ctx.n, ctx.shape, ctx.axes, ctx.keepdim),)


class Max(Function):
    """y = max_i x_i;  dy/dx_i = 1 for the maximal element, 0 elsewhere.

    Along a ``dim`` the gradient goes to the element whose index ``argmax`` returns; over the
    whole tensor it is shared evenly between tied maxima (as PyTorch does).
    """

    @staticmethod
    def forward(ctx, x, dim, keepdim):
        if x.size == 0:
            raise ValueError("max() of an empty tensor")
        ctx.shape, ctx.axes, ctx.keepdim = x.shape, _axes(dim, x.ndim), keepdim
        if dim is None:
            mask = x == x.max()
            ctx.mask = mask / mask.sum()
            return np.asarray(x.max())
        axis = ctx.axes[0]
        idx = np.expand_dims(np.argmax(x, axis=axis), axis)
        ctx.mask = np.zeros(x.shape, dtype=x.dtype)
        np.put_along_axis(ctx.mask, idx, 1, axis=axis)
        y = np.take_along_axis(x, idx, axis=axis)
        return y if keepdim else np.squeeze(y, axis)

    @staticmethod
    def backward(ctx, grad):
        return (_expand_reduced(grad, ctx.shape, ctx.axes, ctx.keepdim) * ctx.mask,)


# --- convolution and pooling (images: N, C, H, W) ----------------------------------------------
def _windows(x, kernel, stride, dilation):
    """Every window a kernel of size ``kernel`` reads from x (N, C, H, W), as a view (N, C, OH, OW,
    kh, kw): window (i, j) starts at row i*sh, column j*sw, and takes every dh-th row and dw-th
    column (dilation). Output pixel (i, j) of a convolution or a pooling is computed from it."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    spans = sliding_window_view(x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    return spans[:, :, ::sh, ::sw, ::dh, ::dw]


def _add_windows(dx, window_grads, stride, dilation):
    """The backward of ``_windows``: add each window's gradient (N, C, OH, OW, kh, kw) onto the
    elements of dx (N, C, H, W) it was read from (where windows overlap, the contributions add).
    One strided slice per kernel position (kh*kw of them), never a loop over pixels."""
    (sh, sw), (dh, dw) = stride, dilation
    oh, ow, kh, kw = window_grads.shape[2:]
    for p in range(kh):
        for q in range(kw):
            rows = slice(p * dh, p * dh + sh * (oh - 1) + 1, sh)   # every row kernel row p read
            cols = slice(q * dw, q * dw + sw * (ow - 1) + 1, sw)
            dx[:, :, rows, cols] += window_grads[:, :, :, :, p, q]
    return dx


def _pad(x, padding, value=0):
    """x (N, C, H, W) with ``padding`` ((top, bottom), (left, right)) rows and columns of ``value``."""
    return np.pad(x, ((0, 0), (0, 0)) + tuple(padding), constant_values=value)


def _padded_shape(shape, padding):
    """The shape of an (N, C, H, W) array of ``shape`` after ``_pad``."""
    return shape[:2] + tuple(n + before + after for n, (before, after) in zip(shape[2:], padding))


def _unpad(x_padded, padding, shape):
    """The inverse of ``_pad``: the padding's share of a gradient is dropped."""
    (top, _), (left, _) = padding
    return x_padded[:, :, top:top + shape[2], left:left + shape[3]]


class Conv2d(Function):
    """y[n, o, i, j] = b[o] + sum over c, p, q of w[o, c, p, q] x[n, c, i*s + p*d, j*s + q*d]
    (x padded; s the stride, d the dilation): each output pixel is one window of x dotted with one
    filter (a correlation). With ``groups`` = G, the channels split into G groups and the filters
    of group g see only its input channels.

    dL/dw[o, c, p, q] = sum over n, i, j of dL/dy[n, o, i, j] x[n, c, i*s + p*d, j*s + q*d]:
                        the input correlated with the output gradient;
    dL/dx: each window's gradient, dL/dwindow = sum over o of dL/dy[n, o, i, j] w[o], added back
           onto the pixels it was read from (``_add_windows``): the output gradient correlated
           with the flipped kernel ("full" correlation);
    dL/db[o] = sum over n, i, j of dL/dy[n, o, i, j].
    """

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1),
                groups=1):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.dilation, ctx.groups = stride, padding, dilation, groups
        windows = _group(_windows(_pad(x, padding), weight.shape[2:], stride, dilation), groups)
        w = weight.reshape(groups, -1, *weight.shape[1:])                      # (G, O/G, C/G, kh, kw)
        y = np.einsum("ngchwpq,gocpq->ngohw", windows, w, optimize=True)      # window . filter
        y = y.reshape(y.shape[0], -1, *y.shape[3:])                            # (N, O, OH, OW)
        return y if bias is None else y + bias[:, None, None]

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved
        needs, groups = ctx.needs_input_grad, ctx.groups
        n, o, oh, ow = grad.shape
        g = grad.reshape(n, groups, o // groups, oh, ow)
        w = weight.reshape(groups, o // groups, *weight.shape[1:])
        x_padded = _pad(x, ctx.padding)
        dx = dw = db = None
        if needs[1]:
            windows = _group(_windows(x_padded, weight.shape[2:], ctx.stride, ctx.dilation), groups)
            dw = np.einsum("ngchwpq,ngohw->gocpq", windows, g, optimize=True).reshape(weight.shape)
        if len(needs) > 2 and needs[2]:
            db = grad.sum(axis=(0, 2, 3))
        if needs[0]:
            window_grads = np.einsum("ngohw,gocpq->ngchwpq", g, w, optimize=True)   # dL/dwindow
            window_grads = window_grads.reshape(n, -1, *window_grads.shape[3:])
            dx_padded = np.zeros(x_padded.shape, grad.dtype)
            dx = _unpad(_add_windows(dx_padded, window_grads, ctx.stride, ctx.dilation), ctx.padding, x.shape)
        return dx, dw, db


def _group(windows, groups):
    """(N, C, OH, OW, kh, kw) windows as (N, G, C/G, OH, OW, kh, kw): the channels of each group."""
    n, c = windows.shape[:2]
    return windows.reshape(n, groups, c // groups, *windows.shape[2:])


class MaxPool2d(Function):
    """y[n, c, i, j] = the largest element of window (i, j) of x (padded with -inf);
    dy/dx = 1 for the element the maximum came from, 0 for the others: each output's gradient goes
    back to its window's arg-max (the first one in row-major order where several tie, as PyTorch;
    never the padding, which ties with the real elements of a window whose maximum is -inf)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        ctx.shape, ctx.kernel, ctx.stride, ctx.padding = x.shape, kernel, stride, padding
        windows = _windows(_pad(x, padding, -np.inf), kernel, stride, (1, 1))
        flat = windows.reshape(*windows.shape[:4], -1)                       # (N, C, OH, OW, kh*kw)
        argmax = np.argmax(flat, axis=-1)                                    # where each maximum is
        real = _windows(_pad(np.ones((1, 1) + x.shape[2:], bool), padding, False), kernel, stride,
                        (1, 1)).reshape((1, 1) + flat.shape[2:])             # True off the padding
        in_padding = ~np.take_along_axis(real, argmax[..., None], axis=-1)[..., 0]
        ctx.argmax = np.where(in_padding, np.argmax(real, axis=-1), argmax)[..., None]
        return np.take_along_axis(flat, ctx.argmax, axis=-1)[..., 0]

    @staticmethod
    def backward(ctx, grad):
        window_grads = np.zeros(grad.shape + (ctx.kernel[0] * ctx.kernel[1],), grad.dtype)
        np.put_along_axis(window_grads, ctx.argmax, grad[..., None], axis=-1)   # dL/dy to the arg-max
        dx = _add_windows(np.zeros(_padded_shape(ctx.shape, ctx.padding), grad.dtype),
                          window_grads.reshape(grad.shape + ctx.kernel),
                          ctx.stride, (1, 1))
        return (_unpad(dx, ctx.padding, ctx.shape),)


class AvgPool2d(Function):
    """y[n, c, i, j] = the mean of window (i, j) of x (padded with zeros, which count, as in
    PyTorch's default); dy/dx = 1/(kh kw) for each element of the window."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        ctx.shape, ctx.kernel, ctx.stride, ctx.padding = x.shape, kernel, stride, padding
        return _windows(_pad(x, padding), kernel, stride, (1, 1)).mean(axis=(-2, -1))

    @staticmethod
    def backward(ctx, grad):
        kh, kw = ctx.kernel
        window_grads = np.broadcast_to((grad / (kh * kw))[..., None, None], grad.shape + ctx.kernel)
        dx = _add_windows(np.zeros(_padded_shape(ctx.shape, ctx.padding), grad.dtype), window_grads,
                          ctx.stride, (1, 1))
        return (_unpad(dx, ctx.padding, ctx.shape),)


# --- elementwise functions --------------------------------------------------------------------
class Exp(Function):
    """y = e^x;  dy/dx = e^x = y."""

    @staticmethod
    def forward(ctx, x):
        y = np.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved
        return (grad * y,)


class Log(Function):
    """y = log x;  dy/dx = 1/x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved
        return (grad / x,)


class Sqrt(Function):
    """y = sqrt(x);  dy/dx = 1 / (2 sqrt(x))."""

    @staticmethod
    def forward(ctx, x):
        y = np.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved
        return (grad / (2 * y),)


class ReLU(Function):
    """a = max(z, 0);  da/dz = 1[z > 0]: 1 where the unit is on, 0 where it is off (also at z = 0,
    as in PyTorch). Read from a: the unit is off where a <= 0."""

    @staticmethod
    def forward(ctx, z):
        a = np.maximum(z, 0)
        ctx.save_for_backward(a)
        return a

    @staticmethod
    def backward(ctx, grad):
        a, = ctx.saved
        return (np.where(a <= 0, 0, grad),)   # dL/dz = dL/da * 1[z > 0] (0 even where dL/da is inf)


class Tanh(Function):
    """a = tanh(z);  d tanh(z)/dz = 1 - tanh(z)^2 = 1 - a^2."""

    @staticmethod
    def forward(ctx, z):
        a = np.tanh(z)
        ctx.save_for_backward(a)
        return a

    @staticmethod
    def backward(ctx, grad):
        a, = ctx.saved
        return (grad * (1 - a * a),)


class Sigmoid(Function):
    """a = sigma(z) = 1 / (1 + e^-z);  d sigma(z)/dz = sigma(z) (1 - sigma(z)) = a (1 - a)."""

    @staticmethod
    def forward(ctx, z):
        a = sigmoid(z)
        ctx.save_for_backward(a)
        return a

    @staticmethod
    def backward(ctx, grad):
        a, = ctx.saved
        return (grad * a * (1 - a),)


def sigmoid(z):
    """1 / (1 + e^-z) without overflow: e^-|z| never exceeds 1."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def log_softmax(z, axis):
    """z_i - log sum_j e^(z_j), computed as (z_i - m) - log sum_j e^(z_j - m) with m = max z:
    the exponentials never overflow, so logits of +-1e4 stay finite."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


class Softmax(Function):
    """a_i = e^(z_i) / sum_j e^(z_j);  da_i/dz_k = a_i (1[i = k] - a_k),
    so dL/dz = a * (dL/da - sum_i dL/da_i a_i)."""

    @staticmethod
    def forward(ctx, z, dim):
        ctx.dim = dim
        a = np.exp(log_softmax(z, dim))
        ctx.save_for_backward(a)
        return a

    @staticmethod
    def backward(ctx, grad):
        a, = ctx.saved
        return (a * (grad - (grad * a).sum(axis=ctx.dim, keepdims=True)),)


class LogSoftmax(Function):
    """y_i = z_i - log sum_j e^(z_j);  dy_i/dz_k = 1[i = k] - softmax(z)_k,
    so dL/dz = dL/dy - softmax(z) * sum_i dL/dy_i."""

    @staticmethod
    def forward(ctx, z, dim):
        ctx.dim = dim
        y = log_softmax(z, dim)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved
        return (grad - np.exp(y) * grad.sum(axis=ctx.dim, keepdims=True),)


# --- losses (per element, reduced by nn.functional; CrossEntropy reduces itself) --------------
def reduce_losses(losses, shape, reduction):
    """The batch's loss from the per-sample losses L_n: their mean (PyTorch's default), their sum,
    or, for "none", all of them in ``shape``."""
    if reduction == "none":
        return losses.reshape(shape)
    total = losses.sum()
    return np.asarray(total / len(losses) if reduction == "mean" else total)


class NLLLoss(Function):
    """The negative log-likelihood of class labels t under log-probabilities y, row by row:
    L_n = -y_n[t_n], then the batch's ``reduction``: "mean" (PyTorch's default), "sum" or "none".

    dL_n/dy_n = -onehot(t_n): -1 at the label, 0 elsewhere (divided by N for the mean).
    After ``LogSoftmax`` this is cross-entropy, and LogSoftmax's backward turns g = -onehot(t)/N
    into g - softmax(z) * sum(g) = (softmax(z) - onehot(t)) / N: the famous gradient.
    Labels arrive checked (``nn.functional``): each in 0..C-1.
    """

    @staticmethod
    def forward(ctx, y, target, reduction):
        rows, labels = y.reshape(-1, y.shape[-1]), target.reshape(-1)   # (C,): one row
        ctx.shape, ctx.labels, ctx.reduction = y.shape, labels.copy(), reduction   # ours: the caller's
        # array may change before backward
        losses = -rows[np.arange(len(labels)), labels]                  # L_n = -y_n[t_n]
        return reduce_losses(losses, target.shape, reduction)

    @staticmethod
    def backward(ctx, grad):
        n = len(ctx.labels)
        if ctx.reduction == "none":
            dL_n = grad.reshape(-1)                     # each sample's own dL/dL_n
        else:
            dL_n = grad / n if ctx.reduction == "mean" else grad
        dy = np.zeros((n, ctx.shape[-1]), grad.dtype)
        dy[np.arange(n), ctx.labels] = -dL_n            # dL/dy_n = -onehot(t_n) dL/dL_n
        return (dy.reshape(ctx.shape),)


class BinaryCrossEntropy(Function):
    """L = -(y log p + (1 - y) log(1 - p)), each log clamped at -100 as PyTorch does.

    dL/dp = (p - y) / (p (1 - p)),  dL/dy = log(1 - p) - log p.
    """

    @staticmethod
    def forward(ctx, p, y):
        if not np.all((p >= 0) & (p <= 1)):   # written so that NaN fails it too
            raise ValueError("binary_cross_entropy: every input must be a probability in [0, 1] "
                             "(NaN is not); for raw scores use binary_cross_entropy_with_logits")
        with np.errstate(divide="ignore"):
            ctx.log_p = np.maximum(np.log(p), -100)
            ctx.log_1mp = np.maximum(np.log1p(-p), -100)
        ctx.save_for_backward(p, y)
        return -(y * ctx.log_p + (1 - y) * ctx.log_1mp)

    @staticmethod
    def backward(ctx, grad):
        p, y = ctx.saved
        dp = grad * (p - y) / np.maximum(p * (1 - p), 1e-12) if ctx.needs_input_grad[0] else None
        dy = grad * (ctx.log_1mp - ctx.log_p) if ctx.needs_input_grad[1] else None
        return dp, dy


class BinaryCrossEntropyWithLogits(Function):
    """L = -(y log sigma(z) + (1 - y) log(1 - sigma(z))) = max(z, 0) - z y + log(1 + e^-|z|).

    dL/dz = sigma(z) - y,  dL/dy = -z.
    """

    @staticmethod
    def forward(ctx, z, y):
        ctx.save_for_backward(z, y)
        return np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))

    @staticmethod
    def backward(ctx, grad):
        z, y = ctx.saved
        dz = grad * (sigmoid(z) - y) if ctx.needs_input_grad[0] else None
        dy = -grad * z if ctx.needs_input_grad[1] else None
        return dz, dy


# --- shape ops --------------------------------------------------------------------------------
class Reshape(Function):
    """y = x with a new shape (same elements in the same order);  the gradient is reshaped back."""

    returns_view = True

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return (grad.reshape(ctx.shape),)


class Permute(Function):
    """y = x with its axes reordered (``.T``, ``transpose``);  the gradient is permuted back."""

    returns_view = True

    @staticmethod
    def forward(ctx, x, dims):
        if sorted(dims) != list(range(x.ndim)):
            raise ValueError(f"permute: {dims} is not an ordering of the {x.ndim} dimensions")
        ctx.inverse = tuple(np.argsort(dims))
        return x.transpose(dims)

    @staticmethod
    def backward(ctx, grad):
        return (grad.transpose(ctx.inverse),)


class GetItem(Function):
    """y = x[index];  dL/dx is zero except at the picked elements, which receive dL/dy.

    An element picked twice (``x[[0, 0]]``) receives both contributions: scatter-*add*.
    Index arrays are copied, so changing one later does not change this gradient.
    """

    returns_view = True   # x[1:] is a view of x; x[[0, 2]] a copy

    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.dtype = x.shape, x.dtype
        ctx.index = _own_index(index)
        return np.asarray(x[index])

    @staticmethod
    def backward(ctx, grad):
        dx = np.zeros(ctx.shape, dtype=ctx.dtype)
        np.add.at(dx, ctx.index, grad)
        return (dx,)


def _own_index(index):
    """A copy of every array or list in an index (its other parts, slices, integers, None and
    Ellipsis, cannot change)."""
    if isinstance(index, tuple):
        return tuple(_own_index(i) for i in index)
    return np.array(index) if isinstance(index, (np.ndarray, list)) else index


class Cat(Function):
    """y = the inputs joined along ``dim``;  each input's gradient is its slice of dL/dy."""

    @staticmethod
    def forward(ctx, *xs, dim):
        if not xs:
            raise ValueError("cat needs at least one tensor")
        ctx.dim = dim
        ctx.splits = np.cumsum([x.shape[dim] for x in xs])[:-1]
        return np.concatenate(xs, axis=dim)

    @staticmethod
    def backward(ctx, grad):
        return tuple(np.split(grad, ctx.splits, axis=ctx.dim))
