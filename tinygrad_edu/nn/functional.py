"""Stateless layer and loss functions (``torch.nn.functional``). The modules in ``nn`` call these."""

import numpy as np

from .. import functions as F
from ..tensor import Tensor, _as_operand

REDUCTIONS = ("mean", "sum", "none")


def linear(x, weight, bias=None):
    """y = x W^T + b (one fused op: see ``functions.Linear``)."""
    return F.Linear.apply(x, weight) if bias is None else F.Linear.apply(x, weight, bias)


def relu(x):
    return F.ReLU.apply(x)


def tanh(x):
    return F.Tanh.apply(x)


def sigmoid(x):
    return F.Sigmoid.apply(x)


def softmax(x, dim):
    return F.Softmax.apply(x, dim=dim)


def log_softmax(x, dim):
    return F.LogSoftmax.apply(x, dim=dim)


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
    """Check the type and shape of integer class labels for (N, C) or (C,) scores; return them as
    an int64 array. Their range is checked by ``_check_label_range`` or, for cross_entropy, by the
    backend's kernel in the pass that reads them."""
    target = target.data if isinstance(target, Tensor) else np.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{what}: target must hold integer class indices (int64), got dtype "
                        f"{target.dtype}; convert with .long()")
    if input.ndim not in (1, 2) or target.shape != input.shape[:-1]:
        raise ValueError(f"{what}: input of shape {input.shape} needs a target of shape "
                         f"{input.shape[:-1]}, got {target.shape}")
    return target.astype(np.int64, copy=False)


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
    """-log softmax(input)[target]: logits (N, C) and integer labels (N,)."""
    _check_reduction(reduction)
    target = _class_targets(input, target, "cross_entropy")
    return F.CrossEntropy.apply(input, target=target, reduction=reduction)


def nll_loss(input, target, reduction="mean"):
    """-input[target] for log-probabilities (N, C) and integer labels (N,)."""
    target = _class_targets(input, target, "nll_loss")
    _check_label_range(target, input.shape[-1], "nll_loss")
    picked = input[np.arange(len(target)), target] if input.ndim == 2 else input[target]
    return _reduce(-picked, reduction)


def binary_cross_entropy(input, target, reduction="mean"):
    """-(y log p + (1 - y) log(1 - p)) for probabilities p in [0, 1]."""
    target = _same_shape(input, target, "binary_cross_entropy")
    return _reduce(F.BinaryCrossEntropy.apply(input, target), reduction)


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    """binary_cross_entropy(sigmoid(input), target), computed stably from the logits."""
    target = _same_shape(input, target, "binary_cross_entropy_with_logits")
    return _reduce(F.BinaryCrossEntropyWithLogits.apply(input, target), reduction)


def mse_loss(input, target, reduction="mean"):
    """(input - target)^2."""
    diff = input - _same_shape(input, target, "mse_loss")
    return _reduce(diff * diff, reduction)
