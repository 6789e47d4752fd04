"""Adam, with PyTorch's update rule."""

import math

import numpy as np

from ..tensor import replayed_whole
from .optimizer import Optimizer


class Adam(Optimizer):
    """With g the gradient (plus weight_decay * w) and t the step count:

        m := beta1 m + (1 - beta1) g          v := beta2 v + (1 - beta2) g^2
        w := w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @replayed_whole   # a jitted training step replays this call whole
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if wd != 0:
                    g = g + wd * p.data
                state = self.state.setdefault(p, {})
                if not state:
                    state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
                state["step"] += 1
                m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                m += (1 - beta1) * (g - m)  # m := beta1 m + (1 - beta1) g, written as PyTorch's lerp
                v *= beta2
                v += (1 - beta2) * g * g
                denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + eps
                p.data -= (lr / (1 - beta1 ** t)) * m / denom
                p._bump_version()
