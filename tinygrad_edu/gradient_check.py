"""``gradcheck``: compare autograd's gradients with central finite differences.

For an input x and a function f, element i of the numerical gradient is
``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)``, which differs from df/dx_i by O(eps^2).
Computed in float64, it is a trustworthy second opinion on every op's backward.
"""

import numpy as np

from .tensor import Tensor, enable_grad, no_grad


class GradcheckError(RuntimeError):
    pass


def _outputs(fn, inputs):
    out = fn(*inputs)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def numerical_jacobian(fn, x, eps=1e-6):
    """d fn() / d x by central differences: ``fn`` reads the array ``x``, which is nudged in place
    one element at a time (and restored). Returns an (fn().size, x.size) float64 matrix."""
    columns = []
    for e in range(x.size):
        orig = x.flat[e]
        with no_grad():
            x.flat[e] = orig + eps
            plus = np.array(fn(), dtype=np.float64).ravel()  # a copy: fn() may return a view of x
            x.flat[e] = orig - eps
            minus = np.array(fn(), dtype=np.float64).ravel()
        x.flat[e] = orig
        columns.append((plus - minus) / (2 * eps))
    return np.stack(columns, axis=1) if columns else np.zeros((0, 0))


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check d fn(*inputs) / d input for every input with ``requires_grad``, element by element.

    Inputs are converted to float64 leaves first. Returns True, or raises ``GradcheckError``
    naming the output, the input, the worst element and both values.
    """
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    inputs = tuple(
        Tensor(x.data.astype(np.float64), requires_grad=x.requires_grad)
        if isinstance(x, Tensor) and x.dtype.kind == "f" else x for x in inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")

    with enable_grad():
        outputs = _outputs(fn, inputs)
    for k, out in enumerate(outputs):
        # analytical Jacobian, one row per output element: backward with a one-hot gradient
        analytical = {i: np.zeros((out.numel(), inputs[i].numel())) for i in checked}
        for j in range(out.numel()):
            for i in checked:
                inputs[i].grad = None
            if out.requires_grad:
                onehot = np.zeros(out.numel())
                onehot[j] = 1
                out.backward(onehot.reshape(out.shape), retain_graph=True)
            for i in checked:
                if inputs[i].grad is not None:
                    analytical[i][j] = inputs[i].grad.data.ravel()
        # numerical Jacobian, one column per input element
        for i in checked:
            x = inputs[i].data
            numerical = numerical_jacobian(lambda: _outputs(fn, inputs)[k].data, x, eps)
            excess = np.abs(analytical[i] - numerical) - (atol + rtol * np.abs(numerical))
            if excess.size and excess.max() > 0:
                j, e = np.unravel_index(np.argmax(excess), excess.shape)
                where = np.unravel_index(e, x.shape)
                raise GradcheckError(
                    f"gradcheck failed for output {k} element {j} with respect to input {i} "
                    f"element {tuple(int(w) for w in where)}: analytical {analytical[i][j, e]:.10g}, "
                    f"numerical {numerical[j, e]:.10g}")
        for i in checked:
            inputs[i].grad = None
    return True
