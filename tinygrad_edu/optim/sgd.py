"""Stochastic gradient descent, with PyTorch's update rule."""

from .. import fast
from ..tensor import replayed_whole
from .optimizer import Optimizer


class SGD(Optimizer):
    """w := w - lr * d, where d is the gradient g (plus weight_decay * w), and with momentum:

        buf := g                                   on the first step
        buf := momentum * buf + (1 - dampening) * g afterwards
        d   := g + momentum * buf  (nesterov)  or  buf
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def replay_key(self):
        """For tinygrad_edu.jit: when this step is one ``axpy_many`` call (no momentum, weight
        decay or maximize, on the fast layer), what that call depends on: each group's learning
        rate and the arrays of its parameters and their gradients. Otherwise None."""
        if not fast.enabled():
            return None
        key = []
        for group in self.param_groups:
            if group["momentum"] or group["weight_decay"] or group["maximize"]:
                return None
            key.append(group["lr"])
            key.extend((p.data, None if p.grad is None else p.grad.data) for p in group["params"])
        return key

    @replayed_whole   # a jitted training step replays this call whole (or its kernel: replay_key)
    def step(self):
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            directions, weights = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if group["maximize"]:
                    g = -g
                if wd != 0:
                    g = g + wd * p.data
                if momentum != 0:
                    state = self.state.setdefault(p, {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.copy()
                    else:
                        buf *= momentum
                        buf += (1 - group["dampening"]) * g
                    g = g + momentum * buf if group["nesterov"] else buf
                directions.append(g)
                weights.append(p.data)
                p._bump_version()   # changed in place below: a graph that saved p can't backward
            if fast.enabled():
                fast.sgd_update(lr, directions, weights)   # all of the loop below in one C call
            else:
                for d, w in zip(directions, weights):
                    w -= lr * d                            # w := w - lr * d
