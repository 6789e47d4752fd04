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
        """For tinygrad_edu.jit: when this step is kernel calls alone (on the fast layer, without
        weight decay, maximize or Nesterov, and with every momentum buffer made: one
        ``axpby_many`` for the buffers, one ``axpy_many`` for the weights), what those calls
        depend on: each group's learning rate, momentum settings and buffers, and the arrays of
        its parameters and their gradients. Otherwise None."""
        if not fast.enabled():
            return None
        key = []
        for group in self.param_groups:
            if group["weight_decay"] or group["maximize"] or group["nesterov"]:
                return None
            key.append(group["lr"])
            if group["momentum"]:
                buffers = [self.state.get(p, {}).get("momentum_buffer")
                           for p in group["params"] if p.grad is not None]
                if any(buf is None for buf in buffers):
                    return None   # the first step copies the gradients, in NumPy
                key.append(["momentum", group["momentum"], group["dampening"], *buffers])
            key.extend((p.data, None if p.grad is None else p.grad.data) for p in group["params"])
        return key

    @replayed_whole   # a jitted training step replays this call whole (or its kernels: replay_key)
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = []
            for p in params:
                g = p.grad.data
                if group["maximize"]:
                    g = -g
                if group["weight_decay"] != 0:
                    g = g + group["weight_decay"] * p.data
                grads.append(g)
            directions = self._momentum(group, params, grads) if group["momentum"] != 0 else grads
            weights = [p.data for p in params]
            for p in params:
                p._bump_version()   # changed in place below: a graph that saved p can't backward
            lr = group["lr"]
            if fast.enabled():
                fast.sgd_update(lr, directions, weights)   # all of the loop below in one C call
            else:
                for d, w in zip(directions, weights):
                    w -= lr * d                            # w := w - lr * d

    def _momentum(self, group, params, grads):
        """Each parameter's momentum buffer moved on by its gradient, and the directions to step
        along: the buffers, or with Nesterov g + momentum * buf."""
        momentum, dampening = group["momentum"], group["dampening"]
        buffers, moved, their_grads = [], [], []
        for p, g in zip(params, grads):
            state = self.state.setdefault(p, {})
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()   # buf := g on the first step
            else:
                moved.append(buf)
                their_grads.append(g)
            buffers.append(buf)
        if fast.enabled():
            fast.momentum_update(momentum, dampening, their_grads, moved)   # the loop below in one C call
        else:
            for g, buf in zip(their_grads, moved):
                buf *= momentum                          # buf := momentum * buf + (1 - dampening) * g
                buf += (1 - dampening) * g
        if group["nesterov"]:
            return [g + momentum * buf for g, buf in zip(grads, buffers)]
        return buffers
