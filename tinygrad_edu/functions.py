"""Every differentiable op: forward and backward side by side.

Notation follows the lecture: for an op ``y = f(x)`` and a loss ``L``, ``backward`` receives
``grad = dL/dy`` and returns ``dL/dx = dL/dy * dy/dx`` (the chain rule). Each docstring gives
``dy/dx``. Gradients may come back in the output's broadcast shape: the engine's
``unbroadcast`` sums them down to each input's shape, so no op here has to.
"""

import math

import numpy as np

from . import backend
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
        ctx.gemm = a2.ndim == 2 and b2.ndim == 2 and a2.dtype == b2.dtype and a2.dtype.kind == "f"
        y = backend.gemm(a2, b2) if ctx.gemm else np.matmul(a2, b2)
        if ctx.b_vec:
            y = y[..., 0]
        if ctx.a_vec:
            y = y[..., 0, :] if not ctx.b_vec else y[..., 0]
        return y

    @staticmethod
    def backward(ctx, grad):
        a, b = _as_matrices(ctx, *ctx.saved)
        g = grad
        if ctx.a_vec:
            g = np.expand_dims(g, -1 if ctx.b_vec else -2)
        if ctx.b_vec:
            g = g[..., None]
        da = db = None
        if ctx.needs_input_grad[0]:
            da = backend.gemm(g, b, trans_b=True) if ctx.gemm else np.matmul(g, np.swapaxes(b, -1, -2))
            if ctx.a_vec:
                da = da[..., 0, :]
        if ctx.needs_input_grad[1]:
            db = backend.gemm(a, g, trans_a=True) if ctx.gemm else np.matmul(np.swapaxes(a, -1, -2), g)
            if ctx.b_vec:
                db = db[..., 0]
        return da, db


class Linear(Function):
    """y = x W^T + b, with W of shape (out, in) as in ``nn.Linear``.

    dL/dx = dL/dy W,   dL/dW = (dL/dy)^T x,   dL/db = sum over the batch of dL/dy.

    Backward computes all three in one kernel call (``backend.linear_backward``; the NumPy
    backend writes them as the three lines above).
    """

    @staticmethod
    def forward(ctx, x, weight, bias=None):
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
        ctx.save_for_backward(x, weight)
        x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])  # extra leading dims: a batch
        y = backend.gemm(x2, weight, trans_b=True, bias=bias)   # x W^T + b in one pass
        return y if x.ndim == 2 else y.reshape(x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved
        x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
        g2 = grad if grad.ndim == 2 else grad.reshape(-1, grad.shape[-1])
        needs = ctx.needs_input_grad   # for (x, weight) or (x, weight, bias)
        dx, dw, db = backend.linear_backward(g2, x2, weight, needs[0], needs[1],
                                             len(needs) > 2 and needs[2])
        if dx is not None and dx.shape != x.shape:
            dx = dx.reshape(x.shape)   # back to the input's leading dims
        return dx, dw, db


class Outer(Function):
    """Y = a b^T for vectors a (m,) and b (n,);  dL/da = dL/dY b,  dL/db = (dL/dY)^T a."""

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim != 1 or b.ndim != 1:
            raise ValueError(f"outer needs two 1-D tensors, got shapes {a.shape} and {b.shape}")
        dtype = np.result_type(a, b)
        ctx.save_for_backward(a, b)
        if dtype.kind != "f":
            return np.outer(a, b)
        return backend.ger(np.zeros((a.size, b.size), dtype), a.astype(dtype), b.astype(dtype))

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        da = grad @ b if ctx.needs_input_grad[0] else None
        db = grad.T @ a if ctx.needs_input_grad[1] else None
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
    """y = max(z, 0);  dy/dz = 1[z > 0] (0 at z = 0, as in PyTorch)."""

    @staticmethod
    def forward(ctx, z):
        y = backend.relu(z)         # np.maximum(z, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved
        return (backend.relu_backward(y, grad),)   # grad where y > 0, else 0 (as PyTorch)


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
class CrossEntropy(Function):
    """Per-sample L_n = -log softmax(z_n)_(y_n) for integer class labels y, in one stable step,
    then the batch's ``reduction``: "mean" (PyTorch's default), "sum" or "none".

    dL_n/dz_n = softmax(z_n) - onehot(y_n): the fused form never divides by a tiny probability.
    ``backend.cross_entropy`` (one C pass, or NumPy) returns it with the losses, so backward only
    scales it by dL/dL_n: for the mean over N samples, dL/dz = (softmax(z) - onehot(y)) / N.
    The reduction is done here rather than by a separate Mean node, as PyTorch does: one node
    less in every step.
    """

    @staticmethod
    def forward(ctx, logits, target, reduction):
        z, labels = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)   # (C,): one row
        losses, ctx.dlogits = backend.cross_entropy(z, labels)   # L_n, and dL_n/dz_n per row
        ctx.shape, ctx.reduction = logits.shape, reduction
        if reduction == "none":
            return losses.reshape(target.shape)
        total = losses.sum()
        return np.asarray(total / len(losses) if reduction == "mean" else total)

    @staticmethod
    def backward(ctx, grad):
        # a new array each time (not in place): a retained graph may run backward again
        if ctx.reduction == "none":
            dz = ctx.dlogits * grad.reshape(-1, 1)     # each row by its own dL/dL_n
        else:
            dz = ctx.dlogits * (grad / len(ctx.dlogits) if ctx.reduction == "mean" else grad)
        return (dz.reshape(ctx.shape),)


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
