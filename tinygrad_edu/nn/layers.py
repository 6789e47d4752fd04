"""Layers: ``Linear`` and the activations, each a thin Module over ``nn.functional``."""

import math
import warnings

from .. import random
from . import functional as F
from .module import Module, Parameter


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features).

    Initialized as PyTorch does: W and b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)).
    Deep ReLU networks (the depth sweep) are sensitive to this scale.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None):
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear needs positive sizes, got in_features={in_features}, "
                             f"out_features={out_features}")
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        rng = random.generator()
        dtype = dtype or "float32"
        self.weight = Parameter(rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, out_features).astype(dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ReLU(Module):
    """a = max(z, 0)."""

    def forward(self, x):
        return F.relu(x)


class Tanh(Module):
    """a = tanh(z)."""

    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    """a = 1 / (1 + e^-z)."""

    def forward(self, x):
        return F.sigmoid(x)


def _implicit_dim(name, ndim):
    """PyTorch's choice when no dim is given: 0 for 0-, 1- and 3-D input, else 1, with a warning."""
    dim = 0 if ndim in (0, 1, 3) else 1
    warnings.warn(f"Implicit dimension choice for {name} is deprecated: pass dim={dim} explicitly",
                  UserWarning, stacklevel=3)
    return dim


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim if self.dim is not None else _implicit_dim("softmax", x.ndim))

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.log_softmax(x, self.dim if self.dim is not None else _implicit_dim("log_softmax", x.ndim))

    def extra_repr(self):
        return f"dim={self.dim}"


class Flatten(Module):
    """Flattens dims start_dim..end_dim (by default all but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    def forward(self, x):
        return x
