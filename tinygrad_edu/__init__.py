"""tinygrad_edu: a teaching-grade autograd engine with a PyTorch-shaped API.

    import tinygrad_edu as torch
    from tinygrad_edu import nn, optim
"""

import numpy as np

from . import ops as _ops
from . import autograd
from .gradient_check import gradcheck
from .fast import set_fast
from .random import manual_seed
from .tensor import (DEFAULT_FLOAT, MaxResult, Tensor, bool_, enable_grad, float32, float64,
                     int32, int64, is_grad_enabled, no_grad, set_grad_enabled, tensor, uint8)
from . import random as _random

__version__ = "0.1.0"

float = float32  # noqa: A001  (torch.float is float32)
double = float64
long = int64
globals()["bool"] = bool_  # torch.bool, without shadowing the builtin inside this module


# --- making tensors ---------------------------------------------------------------------------
def _shape(size):
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)


def _leaf(array, requires_grad):
    return Tensor(array, dtype=array.dtype, requires_grad=requires_grad)


def zeros(*size, dtype=float32, requires_grad=False):
    return _leaf(np.zeros(_shape(size), dtype=dtype), requires_grad)


def ones(*size, dtype=float32, requires_grad=False):
    return _leaf(np.ones(_shape(size), dtype=dtype), requires_grad)


def full(size, fill_value, dtype=float32, requires_grad=False):
    return _leaf(np.full(_shape((size,)), fill_value, dtype=dtype), requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None):
    values = np.arange(start, end, step) if end is not None else np.arange(start)
    return Tensor(values, dtype=dtype)


def from_numpy(array):
    """A tensor sharing memory with ``array`` (no copy), keeping its dtype."""
    t = Tensor._make(array, False, None)
    return t


def randn(*size, dtype=float32, requires_grad=False):
    """Standard normal samples from the library's generator (see ``manual_seed``)."""
    return _leaf(_random.generator().standard_normal(_shape(size)).astype(dtype), requires_grad)


def rand(*size, dtype=float32, requires_grad=False):
    """Uniform samples in [0, 1) from the library's generator."""
    return _leaf(_random.generator().random(_shape(size)).astype(dtype), requires_grad)


def randint(low, high, size, dtype=int64):
    return Tensor(_random.generator().integers(low, high, size=_shape((size,))), dtype=dtype)


def randperm(n):
    return Tensor(_random.generator().permutation(n))


# --- ops as functions, as in torch.* ----------------------------------------------------------
def cat(tensors, dim=0):
    """Join tensors along an existing dimension."""
    return _ops.Cat.apply(*tensors, dim=dim)


concat = cat


def stack(tensors, dim=0):
    """Join tensors along a new dimension: ``cat`` of each with a new axis of size 1."""
    return cat([t.unsqueeze(dim) for t in tensors], dim=dim)


def outer(a, b):
    """The outer product a b^T of two vectors (the lecture's ``np.outer``)."""
    return _ops.Outer.apply(a, b)


def matmul(a, b):
    return a @ b


def _reduction_input(input):
    """A tensor for ``max/argmax/sum/mean``, which also take the NumPy array behind ``x.data``.

    PyTorch code often writes ``torch.max(outputs.data, 1)``; here ``.data`` is an ndarray, whose
    own ``max/argmax/sum/mean`` take different arguments and would fail with NumPy's messages.
    The array is wrapped, without a copy, as a constant (as ``.data`` is in PyTorch)."""
    return Tensor._make(input, False, None) if isinstance(input, np.ndarray) else input


def max(input, dim=None, keepdim=False):  # noqa: A001
    """``max(x)`` is the largest element; ``max(x, dim)`` returns ``(values, indices)``."""
    return _reduction_input(input).max(dim, keepdim)


def argmax(input, dim=None, keepdim=False):
    return _reduction_input(input).argmax(dim, keepdim)


def sum(input, dim=None, keepdim=False):  # noqa: A001
    return _reduction_input(input).sum(dim, keepdim)


def mean(input, dim=None, keepdim=False):
    return _reduction_input(input).mean(dim, keepdim)


def exp(x):
    return x.exp()


def log(x):
    return x.log()


def sqrt(x):
    return x.sqrt()


def relu(x):
    return x.relu()


def tanh(x):
    return x.tanh()


def sigmoid(x):
    return x.sigmoid()


def softmax(x, dim):
    return x.softmax(dim)


def log_softmax(x, dim):
    return x.log_softmax(dim)


def reshape(x, *shape):
    return x.reshape(*shape)


def flatten(x, start_dim=0, end_dim=-1):
    return x.flatten(start_dim, end_dim)


def transpose(x, dim0, dim1):
    return x.transpose(dim0, dim1)


from . import nn, optim, utils, vision  # noqa: E402  (they build on everything above)
from .jit import jit  # noqa: E402  (the compiled step: captures what all of the above computes)
