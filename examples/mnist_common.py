"""What mnist_mlp.py and mnist_sweep.py share: the lecture's MLP, data, training and evaluation.

The training code is written against a ``torch``-like namespace, so the same lines run on
tinygrad_edu and, for comparison, on PyTorch: only the imports in ``load_engine`` differ.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

import tinygrad_edu
from tinygrad_edu.utils.data import Subset
from tinygrad_edu.vision import datasets, transforms

LECTURE_HIDDEN = (512, 256, 128, 64)   # the lecture's 5-layer MLP: 784-512-256-128-64-10
LECTURE_ACCURACY = 0.976


def load_engine(name):
    """``(torch, nn, optim)`` for tinygrad_edu or for PyTorch: the only lines that differ."""
    if name == "torch":
        import torch
        from torch import nn, optim
    else:
        import tinygrad_edu as torch
        from tinygrad_edu import nn, optim
    return torch, nn, optim


def hidden_units_for(layers):
    """Hidden sizes of an MLP with ``layers`` Linear layers: a prefix of 512, 256, 128, 64."""
    if not 1 <= layers <= len(LECTURE_HIDDEN) + 1:
        raise ValueError(f"layers must be between 1 and {len(LECTURE_HIDDEN) + 1}, got {layers}")
    return LECTURE_HIDDEN[:layers - 1]


def make_mlp(nn, hidden_units, in_dim=28 * 28, out_dim=10):
    """The lecture's MLP_h, with the fix the assignment hints at: layers in an nn.ModuleList."""

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.in_dim = in_dim
            sizes = [in_dim, *hidden_units, out_dim]
            self.l_layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])])
            self.relu = nn.ReLU()

        def forward(self, x):
            a = x.view(-1, self.in_dim)
            for layer in self.l_layers[:-1]:
                a = self.relu(layer(a))
            return self.l_layers[-1](a)   # logits: CrossEntropyLoss applies log-softmax

    return MLP()


def load_mnist(data_dir=None, train_subset=None, test_subset=None):
    """MNIST train and test sets. ``data_dir=None`` uses the default folder and downloads if needed;
    a given folder must exist. ``*_subset`` keeps only the first n samples."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise SystemExit(f"error: --data-dir {data_dir} does not exist (it should hold the four "
                         f"MNIST IDX files; leave it out to download them)")
    kwargs = dict(root=data_dir, download=data_dir is None, transform=transforms.ToTensor())
    train = datasets.MNIST(train=True, **kwargs)
    test = datasets.MNIST(train=False, **kwargs)
    if train_subset:
        train = Subset(train, np.arange(min(train_subset, len(train))))
    if test_subset:
        test = Subset(test, np.arange(min(test_subset, len(test))))
    return train, test


def to_engine(torch, tensor):
    """A batch from tinygrad_edu's DataLoader, as the engine's tensor type."""
    return tensor if torch is tinygrad_edu else torch.from_numpy(tensor.numpy())


def train_epoch(torch, model, loader, criterion, optimizer, epoch, log_every=2000, log=print):
    """One pass over ``loader``; prints the lecture's ``[epoch, batch] loss`` lines. Returns the
    mean training loss over the epoch."""
    running_loss, total_loss, steps = 0.0, 0.0, 0
    for i, (inputs, labels) in enumerate(loader):
        inputs, labels = to_engine(torch, inputs), to_engine(torch, labels)
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        value = loss.item()
        running_loss += value
        total_loss += value
        steps += 1
        if log_every and (i + 1) % log_every == 0:
            log('[%d, %5d] loss: %.3f' % (epoch + 1, i + 1, running_loss / log_every))
            running_loss = 0.0
    return total_loss / max(steps, 1)


def evaluate(torch, model, loader):
    """(number correct, number predicted) on ``loader``, without recording a graph."""
    n_correct = n_predict = 0
    with torch.no_grad():
        for inputs, labels in loader:
            outputs = model(to_engine(torch, inputs))
            _, predicted = torch.max(outputs, 1)
            n_predict += len(predicted)
            n_correct += int((to_engine(torch, labels) == predicted).sum())
    return n_correct, n_predict


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return value


def add_common_args(parser, out_default):
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--batch-size", type=positive_int, default=12)
    parser.add_argument("--lr", type=positive_float, default=0.01)
    parser.add_argument("--data-dir", default=os.environ.get("TINYGRAD_EDU_DATA"),
                        help="folder with the MNIST IDX files (default: $TINYGRAD_EDU_DATA, else "
                             "download to the user cache)")
    parser.add_argument("--out", type=Path, default=Path(out_default),
                        help="where figures and results go")


def seconds_since(start):
    return time.perf_counter() - start

