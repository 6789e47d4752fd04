"""``torch.autograd``'s names, for code written against PyTorch (``tinygrad_edu.autograd.Function``,
``.gradcheck``, ``.no_grad``). Nothing is defined here: the engine (``Tensor``, ``Function``, the
backward walk) is in tensor.py, the gradient check in gradient_check.py.
"""

from .gradient_check import GradcheckError, gradcheck, numerical_jacobian
from .tensor import Function, backward, enable_grad, no_grad, set_grad_enabled

__all__ = ["Function", "GradcheckError", "backward", "enable_grad", "gradcheck", "no_grad",
           "numerical_jacobian", "set_grad_enabled"]
