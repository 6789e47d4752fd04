"""Gradients derived by hand, in plain NumPy, to set beside autograd's.

Two networks from the lecture:

* ``ShallowNet`` (Programming assignment 2): x -> z1 = W1 x + b1 -> a1 = tanh(z1)
  -> z2 = w2 . a1 + b2 -> a2 = sigma(z2), with binary cross-entropy summed over the samples.
  Its gradients come in three forms: the lecture's per-sample loop with reshape, the same loop
  with outer products (the "simpler solution"), and the whole batch at once with matrix products.
* ``DeepMLP`` (the depth sweep): Linear layers with ReLU between them and softmax cross-entropy
  (mean over the batch), back-propagated layer by layer.

``module()`` builds the same network from ``tinygrad_edu.nn`` *sharing the weight arrays*, and
``autograd_gradients`` returns what ``loss.backward()`` finds, under the same names, so the two
can be compared parameter by parameter with ``compare``.
"""

from collections import namedtuple

import numpy as np

from . import nn
from .gradient_check import numerical_jacobian
from .ops import log_softmax, sigmoid   # the engine's stable forms of the same formulas
from .tensor import Tensor

ShallowCache = namedtuple("ShallowCache", ["z1", "a1", "z2", "a2"])


class ShallowNet:
    """One hidden layer of tanh units and a sigmoid output, as in the lecture.

    ``W1`` is (h, n), ``b1`` (h,), ``W2`` (h,) and ``b2`` a 0-d array (so it can be shared, and
    updated in place, like the others).
    """

    names = ("W1", "b1", "W2", "b2")

    def __init__(self, num_input_features, num_hidden, seed=0, dtype=np.float64):
        rng = np.random.default_rng(seed)
        self.num_input_features, self.num_hidden = num_input_features, num_hidden
        self.W1 = (rng.standard_normal((num_hidden, num_input_features)) * 0.5).astype(dtype)
        self.b1 = (rng.standard_normal(num_hidden) * 0.1).astype(dtype)
        self.W2 = (rng.standard_normal(num_hidden) * 0.5).astype(dtype)
        self.b2 = np.array(rng.standard_normal() * 0.1, dtype=dtype)

    def params(self):
        return {name: getattr(self, name) for name in self.names}

    def predict(self, x):
        """a2 for one sample x (n,) or a batch X (N, n), and the cache (z1, a1, z2, a2)."""
        z1 = x @ self.W1.T + self.b1     # z1 = W1 x + b1
        a1 = np.tanh(z1)                 # a1 = tanh(z1)
        z2 = a1 @ self.W2 + self.b2      # z2 = w2 . a1 + b2
        a2 = sigmoid(z2)                 # a2 = sigma(z2)
        return a2, ShallowCache(z1, a1, z2, a2)

    def cost(self, X, Y):
        """J = sum_i -y_i log a2_i - (1 - y_i) log(1 - a2_i)."""
        a2, _ = self.predict(X)
        return -np.sum(Y * np.log(a2) + (1 - Y) * np.log(1 - a2))

    # --- the hand-derived gradients, three ways ---------------------------------------------------
    def gradients_loop(self, X, Y):
        """The lecture's loop: one sample at a time, dW1 from a reshaped column times a row."""
        def add_dW1(dW1, db1_tmp, x):
            dW1 += db1_tmp.reshape(self.num_hidden, 1) * x.reshape(1, self.num_input_features)
        return self._per_sample(X, Y, add_dW1)

    def gradients_outer(self, X, Y):
        """The "simpler solution": dW1 += outer(db1_tmp, x)."""
        def add_dW1(dW1, db1_tmp, x):
            dW1 += np.outer(db1_tmp, x)
        return self._per_sample(X, Y, add_dW1)

    def _per_sample(self, X, Y, add_dW1):
        """Sum each sample's gradient; ``add_dW1`` does dL/dW1 += dL/db1 x^T its own way."""
        grads = {name: np.zeros_like(p) for name, p in self.params().items()}
        for x, y in zip(X, Y):
            a2, (z1, a1, z2, _) = self.predict(x)
            diff = a2 - y                                   # dL/db2 = a2 - y
            grads["b2"] += diff
            grads["W2"] += diff * a1                        # dL/dw2_i = (a2 - y) a1_i
            db1_tmp = diff * self.W2 * (1 - a1 ** 2)        # dL/db1 = (a2 - y)(w2 ⊙ (1 - a1^2))
            grads["b1"] += db1_tmp
            add_dW1(grads["W1"], db1_tmp, x)                # dL/dW1 = dL/db1 x^T
        return grads

    def gradients_batch(self, X, Y):
        """All samples at once: each per-sample formula becomes a row, sums become products.

        With D2 = a2 - y (N,) and D1 = D2 ⊙ w2 ⊙ (1 - A1^2) (N, h):
        db2 = sum D2,  dW2 = A1^T D2,  db1 = sum over rows of D1,  dW1 = D1^T X.
        """
        A2, (Z1, A1, Z2, _) = self.predict(X)
        D2 = A2 - Y
        D1 = D2[:, None] * self.W2 * (1 - A1 ** 2)
        return {"W1": D1.T @ X, "b1": D1.sum(axis=0), "W2": A1.T @ D2, "b2": np.asarray(D2.sum())}

    # --- the same network in tinygrad_edu.nn ------------------------------------------------------
    def module(self):
        """Linear -> Tanh -> Linear -> Sigmoid whose Parameters share this network's arrays."""
        model = nn.Sequential(nn.Linear(self.num_input_features, self.num_hidden), nn.Tanh(),
                              nn.Linear(self.num_hidden, 1), nn.Sigmoid())
        model[0].weight.data, model[0].bias.data = self.W1, self.b1
        model[2].weight.data = self.W2.reshape(1, self.num_hidden)   # views: one set of numbers
        model[2].bias.data = self.b2.reshape(1)
        return model

    def autograd_gradients(self, X, Y):
        """What ``loss.backward()`` computes for the summed BCE, named like the hand gradients."""
        model = self.module()
        a2 = model(Tensor(X)).reshape(-1)
        nn.BCELoss(reduction="sum")(a2, Tensor(np.asarray(Y, dtype=a2.dtype))).backward()
        grads = [p.grad.data for p in model.parameters()]
        return {"W1": grads[0], "b1": grads[1], "W2": grads[2].reshape(-1), "b2": grads[3].reshape(())}


class DeepMLP:
    """Linear layers with ReLU between them and softmax cross-entropy on the logits.

    ``Ws[l]`` is (out, in) like ``nn.Linear.weight``; the loss is the mean over the batch.
    """

    def __init__(self, sizes, seed=0, dtype=np.float64):
        rng = np.random.default_rng(seed)
        self.sizes = list(sizes)
        self.Ws = [(rng.standard_normal((o, i)) / np.sqrt(i)).astype(dtype) for i, o in zip(sizes, sizes[1:])]
        self.bs = [(rng.standard_normal(o) * 0.1).astype(dtype) for o in sizes[1:]]

    @property
    def names(self):
        return tuple(n for l in range(1, len(self.Ws) + 1) for n in (f"W{l}", f"b{l}"))

    def params(self):
        return dict(zip(self.names, (p for pair in zip(self.Ws, self.bs) for p in pair)))

    def forward(self, X):
        """Logits and the per-layer cache [(a_in, z), ...]."""
        a, cache = X, []
        for l, (W, b) in enumerate(zip(self.Ws, self.bs)):
            z = a @ W.T + b                              # z = W a + b, one row per sample
            cache.append((a, z))
            a = np.maximum(z, 0) if l < len(self.Ws) - 1 else z
        return a, cache

    def cost(self, X, y):
        logits, _ = self.forward(X)
        return -log_softmax(logits, 1)[np.arange(len(y)), y].mean()

    def gradients(self, X, y):
        """Back-propagation by hand, from the loss to the first layer:

        dL/dz_out = (softmax(z_out) - onehot(y)) / N, then for each layer, last to first:
        dL/dW = (dL/dz)^T a_in,  dL/db = sum over the batch of dL/dz,
        dL/da_in = dL/dz W,  and below a ReLU: dL/dz = dL/da ⊙ 1[z > 0].
        """
        logits, cache = self.forward(X)
        dz = np.exp(log_softmax(logits, 1))              # softmax(z_out)
        dz[np.arange(len(y)), y] -= 1                    # softmax - onehot
        dz /= len(y)                                     # the mean over the batch
        grads = {}
        for l in reversed(range(len(self.Ws))):
            a_in, _ = cache[l]
            grads[f"W{l + 1}"] = dz.T @ a_in              # dL/dW = dL/dz a^T
            grads[f"b{l + 1}"] = dz.sum(axis=0)           # dL/db = dL/dz
            if l > 0:
                da = dz @ self.Ws[l]                     # dL/da = W^T dL/dz
                dz = da * (cache[l - 1][1] > 0)          # dL/dz = dL/da ⊙ 1[z > 0]
        return {name: grads[name] for name in self.names}

    def module(self):
        layers = []
        for l, (W, b) in enumerate(zip(self.Ws, self.bs)):
            linear = nn.Linear(W.shape[1], W.shape[0])
            linear.weight.data, linear.bias.data = W, b   # shared arrays
            layers += [linear] + ([nn.ReLU()] if l < len(self.Ws) - 1 else [])
        return nn.Sequential(*layers)

    def autograd_gradients(self, X, y):
        model = self.module()
        nn.CrossEntropyLoss()(model(Tensor(X)), Tensor(np.asarray(y, dtype=np.int64))).backward()
        return dict(zip(self.names, (p.grad.data for p in model.parameters())))


# --- comparing ------------------------------------------------------------------------------------
GradientRow = namedtuple("GradientRow", ["name", "shape", "max_abs_diff", "max_rel_diff"])


def compare(reference, other):
    """One row per parameter: the largest absolute difference and the largest difference relative
    to the reference's largest entry (so near-zero entries do not blow the ratio up)."""
    rows = []
    for name, ref in reference.items():
        ref, oth = np.asarray(ref, dtype=np.float64), np.asarray(other[name], dtype=np.float64)
        if ref.shape != oth.shape:
            raise ValueError(f"{name}: shapes differ, {ref.shape} vs {oth.shape}")
        diff = np.abs(ref - oth).max(initial=0.0)
        rows.append(GradientRow(name, ref.shape, diff, diff / max(np.abs(ref).max(initial=0.0), 1e-300)))
    return rows


def assert_agree(reference, other, rtol, what="gradients"):
    """Raise AssertionError naming every parameter whose gradients differ by more than ``rtol``."""
    bad = [r for r in compare(reference, other) if not r.max_rel_diff <= rtol]
    if bad:
        raise AssertionError(f"{what} disagree for " + ", ".join(
            f"{r.name} (max relative difference {r.max_rel_diff:.3g})" for r in bad))


def numerical_gradients(cost, params, eps=1e-6):
    """dcost/dparam for every array in ``params`` by central differences (nudging them in place)."""
    return {name: numerical_jacobian(cost, p, eps).reshape(p.shape) for name, p in params.items()}
