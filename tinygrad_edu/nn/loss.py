"""Loss modules: each holds a reduction ("mean", "sum" or "none") and calls ``nn.functional``."""

from . import functional as F
from .module import Module


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        F._check_reduction(reduction)   # refused when the loss is built, not at its first call
        self.reduction = reduction

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class CrossEntropyLoss(_Loss):
    """Softmax + negative log-likelihood on logits (N, C) and int64 labels (N,), fused and stable
    (also (C,) with one label, and (N, C, d1, ...) with labels (N, d1, ...), as in PyTorch).
    With mean reduction, dL/dlogits = (softmax - onehot) / N."""

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.reduction)


class NLLLoss(_Loss):
    """-input[target] for log-probabilities, e.g. after LogSoftmax (shapes as CrossEntropyLoss)."""

    def forward(self, input, target):
        return F.nll_loss(input, target, self.reduction)


class BCELoss(_Loss):
    """Binary cross-entropy on probabilities (after a Sigmoid)."""

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Sigmoid + binary cross-entropy in one stable step, on raw scores."""

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.reduction)


class MSELoss(_Loss):
    """Mean squared error (input - target)^2."""

    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)
