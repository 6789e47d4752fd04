"""Stateless layer and loss functions (``torch.nn.functional``). The modules in ``nn`` call these.

Here the path is chosen: ``linear``, ``relu``, ``cross_entropy``, ``conv2d`` and ``max_pool2d`` run
the fast layer's op (``fast.py``) when ``fast.enabled()``, else the plain ops of ``ops.py``. Both give the same numbers
up to float rounding (tests/test_fast.py).
"""

import numpy as np

from .. import fast, ops, random
from ..tensor import Tensor, _as_operand, checked, computed, untracked

REDUCTIONS = ("mean", "sum", "none")


def linear(x, weight, bias=None):
    """y = x W^T + b (``ops.Linear``, or ``fast.Linear``)."""
    op = fast.Linear if fast.enabled() and x.dtype.kind == "f" else ops.Linear   # C: floats only
    return op.apply(x, weight) if bias is None else op.apply(x, weight, bias)


def relu(x):
    """a = max(z, 0) (``ops.ReLU``, or ``fast.ReLU``)."""
    return (fast.ReLU if fast.enabled() else ops.ReLU).apply(x)


def tanh(x):
    return ops.Tanh.apply(x)


def sigmoid(x):
    return ops.Sigmoid.apply(x)


def softmax(x, dim):
    return ops.Softmax.apply(x, dim=dim)


def log_softmax(x, dim):
    return ops.LogSoftmax.apply(x, dim=dim)


# --- images: convolution, pooling, dropout ----------------------------------------------------------
def _pair(value, what):
    """An int or a pair of ints (PyTorch's kernel_size=5 or (5, 3)) as a pair of positive ints."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return tuple(int(v) for v in pair)


def conv_padding(padding, kernel, stride, dilation):
    """``padding`` (an int, a pair, "valid" or "same") as ((top, bottom), (left, right)). "same"
    keeps the image's size (stride 1 only); an odd total puts the extra row or column at the
    bottom or right, as PyTorch does."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
        if stride != (1, 1):
            raise ValueError("padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((total // 2, total - total // 2) for total in totals)
    pair = (padding, padding) if isinstance(padding, (int, np.integer)) else tuple(padding)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 0 for v in pair):
        raise ValueError(f"padding must be a non-negative int, a pair of them, 'valid' or 'same', "
                         f"got {padding!r}")
    return tuple((int(v), int(v)) for v in pair)


def _image_batch(input, what):
    """(N, C, H, W) as it is, (C, H, W) as a batch of one; whether it was unbatched."""
    if input.ndim not in (3, 4):
        raise ValueError(f"{what}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape "
                         f"{tuple(input.shape)}")
    if input.dtype.kind != "f":
        raise TypeError(f"{what}: input must be float32 or float64, got {input.dtype}; "
                        f"convert with .float()")
    return (input, False) if input.ndim == 4 else (input.unsqueeze(0), True)


def _check_kernel_fits(size, kernel, padding, dilation, what):
    """Raise unless a (dilated) kernel fits in ``size`` pixels plus padding: the output would be
    empty."""
    span = dilation * (kernel - 1) + 1
    if size + sum(padding) < span:
        raise ValueError(f"{what}: the input ({size} pixels, padded to {size + sum(padding)}) is "
                         f"smaller than the kernel ({span} pixels with dilation {dilation}): the "
                         f"output size is too small (0)")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """y = the correlation of ``input`` (N, C, H, W) or (C, H, W) with the filters ``weight``
    (O, C/groups, kh, kw), plus ``bias`` (O,) (``ops.Conv2d``, or ``fast.Conv2d`` or
    ``fast.WinogradConv2d``)."""
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    padding = conv_padding(padding, weight.shape[2:], stride, dilation)
    x, unbatched = _image_batch(input, "conv2d")
    if weight.ndim != 4:
        raise ValueError(f"conv2d: weight must be 4-D (out, in/groups, kh, kw), got shape "
                         f"{tuple(weight.shape)}")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise TypeError(f"conv2d: input dtype {x.dtype} differs from weight dtype {weight.dtype}"
                        + (f" or bias dtype {bias.dtype}" if bias is not None else "")
                        + "; convert with .float() or .double()")
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels but the weight {tuple(weight.shape)} "
                         f"with groups={groups} expects {weight.shape[1] * groups}")
    for axis in (0, 1):   # height, width
        _check_kernel_fits(x.shape[2 + axis], weight.shape[2 + axis], padding[axis], dilation[axis],
                           "conv2d")
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if not fast.enabled():
        op = ops.Conv2d
    elif fast.winograd_pays(x.shape, weight.shape, **options):
        op, options = fast.WinogradConv2d, dict(padding=padding)
    else:
        op = fast.Conv2d
    y = op.apply(x, weight, **options) if bias is None else op.apply(x, weight, bias, **options)
    return y.squeeze(0) if unbatched else y


def _pool(op, input, kernel_size, stride, padding, what):
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    pads = (padding, padding) if isinstance(padding, (int, np.integer)) else tuple(padding)
    if not all(0 <= p <= k // 2 for p, k in zip(pads, kernel)):
        raise ValueError(f"{what}: pad should be at most half of effective kernel size, but got "
                         f"pad={padding}, kernel_size={kernel_size}")
    padding = tuple((int(p), int(p)) for p in pads)
    x, unbatched = _image_batch(input, what)
    for axis in (0, 1):
        _check_kernel_fits(x.shape[2 + axis], kernel[axis], padding[axis], 1, what)
    y = op.apply(x, kernel=kernel, stride=stride, padding=padding)
    return y.squeeze(0) if unbatched else y


def max_pool2d(input, kernel_size, stride=None, padding=0):
    """The largest value of each kernel-sized window (``ops.MaxPool2d``, or ``fast.MaxPool2d``);
    stride = kernel_size unless given."""
    return _pool(fast.MaxPool2d if fast.enabled() else ops.MaxPool2d, input, kernel_size, stride, padding, "max_pool2d")


def avg_pool2d(input, kernel_size, stride=None, padding=0):
    """The mean of each kernel-sized window, zero padding included (``ops.AvgPool2d``)."""
    return _pool(ops.AvgPool2d, input, kernel_size, stride, padding, "avg_pool2d")


def check_dropout_probability(p):
    """``p`` if it is a probability, else ValueError in PyTorch's words."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return p


def dropout(input, p=0.5, training=True):
    """Inverted dropout: in training, each element is kept with probability 1 - p and scaled by
    1/(1 - p) (so the expected output is the input), or zeroed. dL/dx is the same mask, scaled:
    it is a product with a constant tensor. Outside training, the input itself."""
    check_dropout_probability(p)
    if not training or p == 0:
        return input
    return input * untracked(_dropout_scale, input.shape, p, input.dtype)   # a new mask each call


def _dropout_scale(shape, p, dtype):
    keep = random.generator().random(shape) >= p
    return (keep / (1 - p) if p < 1 else np.zeros(shape)).astype(dtype)


def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduce(loss, reduction):
    """Apply a loss's reduction ("mean", "sum" or "none"; cross_entropy reduces in its own node)."""
    _check_reduction(reduction)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def _class_targets(input, target, what):
    """Check the type and shape of integer class labels for scores laid out as PyTorch's: (C,)
    with one label, (N, C) with N labels, or (N, C, d1, d2, ...) with labels (N, d1, d2, ...);
    return them as an int64 array. Their range is checked by ``_check_label_range`` or, for
    cross_entropy, by the backend's kernel in the pass that reads them."""
    target = target.data if isinstance(target, Tensor) else np.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{what}: target must hold integer class indices (int64), got dtype "
                        f"{target.dtype}; convert with .long()")
    shape = input.shape
    if not shape:
        raise ValueError(f"{what}: input needs a class dimension, (C,), (N, C) or (N, C, d1, ...), "
                         f"got a 0-d input")
    expected = shape[:1] + shape[2:] if len(shape) > 1 else ()
    if target.shape != expected:
        extra = [f"d{i}" for i in range(1, len(shape) - 1)]   # the axes after N and C
        layout, target_layout = ((("C",), ()) if len(shape) == 1
                                 else (("N", "C", *extra), ("N", *extra)))
        raise ValueError(f"{what}: input of shape {shape} is {_axes(layout)} with "
                         f"C = {shape[len(shape) > 1]} classes, so the target must have shape "
                         f"{_axes(target_layout)} = {expected}, got {target.shape}")
    return target if target.dtype == np.int64 else computed(np.ndarray.astype, target, np.int64)


def _axes(names):
    """("N", "C") as "(N, C)", ("N",) as "(N,)", as Python writes shapes."""
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


def _rows_of_classes(input):
    """(N, C, d1, ..., dk) scores as rows of C, one per label: the class axis moved last, then the
    rest flattened, with differentiable ops (so the 2-D losses need no K-dimensional variant);
    (C,) and (N, C) scores as they are."""
    if input.ndim <= 2:
        return input
    return input.permute(0, *range(2, input.ndim), 1).reshape(-1, input.shape[1])


def _check_label_range(target, n_classes, what):
    # one unsigned comparison finds labels below 0 (they wrap to huge values) and above C - 1
    out_of_range = target.astype(np.uint64, copy=False) >= n_classes
    if out_of_range.any():
        bad = target[out_of_range].flat[0]
        raise IndexError(f"{what}: target {bad} is out of range for {n_classes} classes "
                         f"(labels must be in 0..{n_classes - 1})")


def _same_shape(input, target, what):
    target = _as_operand(target, input)
    if target.shape != input.shape:
        raise ValueError(f"{what}: target shape {target.shape} differs from input shape "
                         f"{input.shape}; broadcasting them would give a wrong loss")
    return target


def cross_entropy(input, target, reduction="mean"):
    """-log softmax(input)[target] over the class axis: logits (N, C) and integer labels (N,), or
    (C,) and one label, or (N, C, d1, ...) and labels (N, d1, ...) (one per pixel, say).

    Plain: ``nll_loss(log_softmax(input))``, two ops whose gradients chain to (softmax - onehot)/N.
    Fast: ``fast.CrossEntropy``, both in one kernel pass."""
    _check_reduction(reduction)
    if input.dtype.kind != "f":
        raise TypeError(f"cross_entropy: input must hold floating-point scores (float32 or float64), "
                        f"got {input.dtype}; convert with .float()")
    target = _class_targets(input, target, "cross_entropy")
    rows = _rows_of_classes(input)
    if fast.enabled():
        losses = fast.CrossEntropy.apply(rows, target=target.reshape(rows.shape[:-1]), reduction=reduction)
    else:
        checked(_check_label_range, target, rows.shape[-1], "cross_entropy")
        losses = ops.NLLLoss.apply(rows.log_softmax(-1), target=target.reshape(rows.shape[:-1]),
                                   reduction=reduction)
    return losses.reshape(target.shape) if reduction == "none" and input.ndim > 2 else losses


def nll_loss(input, target, reduction="mean"):
    """-input[target] over the class axis, for log-probabilities laid out as in ``cross_entropy``."""
    _check_reduction(reduction)
    target = _class_targets(input, target, "nll_loss")
    rows = _rows_of_classes(input)
    checked(_check_label_range, target, rows.shape[-1], "nll_loss")
    losses = ops.NLLLoss.apply(rows, target=target.reshape(rows.shape[:-1]), reduction=reduction)
    return losses.reshape(target.shape) if reduction == "none" and input.ndim > 2 else losses


def binary_cross_entropy(input, target, reduction="mean"):
    """-(y log p + (1 - y) log(1 - p)) for probabilities p in [0, 1]."""
    target = _same_shape(input, target, "binary_cross_entropy")
    return _reduce(ops.BinaryCrossEntropy.apply(input, target), reduction)


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    """binary_cross_entropy(sigmoid(input), target), computed stably from the logits."""
    target = _same_shape(input, target, "binary_cross_entropy_with_logits")
    return _reduce(ops.BinaryCrossEntropyWithLogits.apply(input, target), reduction)


def mse_loss(input, target, reduction="mean"):
    """(input - target)^2."""
    diff = input - _same_shape(input, target, "mse_loss")
    return _reduce(diff * diff, reduction)
