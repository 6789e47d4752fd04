"""What the MNIST examples share: the lecture's MLP, a small CNN, data, training and evaluation.

The training code is written against a ``torch``-like namespace, so the same lines run on
tinygrad_edu and, for comparison, on PyTorch: only the imports in ``load_engine`` differ.
"""

import argparse
import json
import os
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

import tinygrad_edu
from tinygrad_edu.utils.data import DataLoader, Subset
from tinygrad_edu.utils.files import atomic_write_text
from tinygrad_edu.vision import datasets, transforms
from tinygrad_edu.vision.utils import save_prediction_figure

LECTURE_HIDDEN = (512, 256, 128, 64)   # the lecture's 5-layer MLP: 784-512-256-128-64-10
LECTURE_ACCURACY = 0.976
CNN_HIDDEN = 128                       # units of make_cnn's hidden Linear layer


def load_engine(name):
    """``(torch, nn, optim)`` for tinygrad_edu or for PyTorch: the only lines that differ."""
    if name == "torch":
        import torch
        from torch import nn, optim
    else:
        import tinygrad_edu as torch
        from tinygrad_edu import nn, optim
    return torch, nn, optim


def hidden_units_for(layers, widths=LECTURE_HIDDEN):
    """Hidden sizes of an MLP with ``layers`` Linear layers: a prefix of ``widths`` (the lecture's
    512, 256, 128, 64 unless given)."""
    if not 1 <= layers <= len(widths) + 1:
        raise ValueError(f"layers must be between 1 and {len(widths) + 1}, got {layers}")
    return tuple(widths[:layers - 1])


ACTIVATIONS = ("relu", "tanh", "sigmoid")   # make_mlp's choices, the names of nn.ReLU, nn.Tanh, nn.Sigmoid


def make_mlp(nn, hidden_units, in_dim=28 * 28, out_dim=10, activation="relu"):
    """The lecture's MLP_h, with the fix the assignment hints at: layers in an nn.ModuleList.
    ``activation`` (one of ACTIVATIONS) follows every hidden layer: the lecture's ReLU by default.
    It is one module that forward calls once per hidden layer, so a forward hook on
    ``model.activation`` sees every hidden layer's output, in order."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    activation_class = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[activation]

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.in_dim = in_dim
            sizes = [in_dim, *hidden_units, out_dim]
            self.l_layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])])
            self.activation = activation_class()   # the lecture's self.relu

        def forward(self, x):
            a = x.view(-1, self.in_dim)
            for layer in self.l_layers[:-1]:
                a = self.activation(layer(a))
            return self.l_layers[-1](a)   # logits: CrossEntropyLoss applies log-softmax

    return MLP()


def make_cnn(nn, hidden=CNN_HIDDEN):
    """The lecture's Sequential conv stack, Conv2d(1, 20, 5)-ReLU-Conv2d(20, 64, 5)-ReLU, named as
    in its OrderedDict example, with a 2x2 max-pool after each ReLU and a classifier on top.

    The image shrinks 28 -> 24 (5x5 convolution) -> 12 (pool) -> 8 (convolution) -> 4 (pool), so
    the classifier sees 64 channels x 4 x 4 = 1024 features. Returns logits, as make_mlp does.
    """
    return nn.Sequential(OrderedDict([
        ('conv1', nn.Conv2d(1, 20, 5)),
        ('relu1', nn.ReLU()),
        ('pool1', nn.MaxPool2d(2)),
        ('conv2', nn.Conv2d(20, 64, 5)),
        ('relu2', nn.ReLU()),
        ('pool2', nn.MaxPool2d(2)),
        ('flatten', nn.Flatten()),
        ('fc1', nn.Linear(64 * 4 * 4, hidden)),
        ('relu3', nn.ReLU()),
        ('fc2', nn.Linear(hidden, 10)),
    ]))


def mnist_folder(data_dir):
    """The folder MNIST is read from: ``data_dir``, else $TINYGRAD_EDU_DATA, else the user cache."""
    return Path(data_dir) if data_dir is not None else datasets.default_root()


def load_mnist(data_dir=None, train_subset=None, test_subset=None, download=False):
    """MNIST train and test sets from ``data_dir`` (``None``: $TINYGRAD_EDU_DATA, else the user
    cache). Missing files are downloaded if ``download`` or if no folder was named at all.
    ``*_subset`` keeps only the first n samples.

    Missing or damaged data ends the program with one paragraph saying what to do (SystemExit):
    the examples are run from the command line, where the advice is a flag, not an argument.
    """
    root = mnist_folder(data_dir)
    download = download or data_dir is None
    kwargs = dict(root=root, download=download, transform=transforms.ToTensor())
    try:
        train = datasets.MNIST(train=True, **kwargs)
        test = datasets.MNIST(train=False, **kwargs)
    except FileNotFoundError:
        raise SystemExit(data_problem(root, "this needs the four IDX files " + ", ".join(datasets.MNIST.resources),
                                      download)) from None
    except (OSError, ValueError, RuntimeError) as e:   # corrupt or unreadable files, failed downloads
        raise SystemExit(data_problem(root, str(e).splitlines()[0].rstrip(":. "), download)) from None
    if train_subset:
        train = Subset(train, np.arange(min(train_subset, len(train))))
    if test_subset:
        test = Subset(test, np.arange(min(test_subset, len(test))))
    return train, test


def data_problem(root, reason, downloading):
    """One paragraph for a user whose MNIST is missing or damaged: what, where, and the flags that help."""
    fetch = ("check the network connection and run again" if downloading else
             "add --download to fetch them into that folder from the mirrors")
    return (f"error: cannot use MNIST in {root}: {reason}.\n"
            f"Put the four files there (gzipped or not; a MNIST/raw subfolder works too), or point "
            f"--data-dir (or TINYGRAD_EDU_DATA) at the folder that holds them, or {fetch}.")


def to_engine(torch, tensor):
    """A batch from tinygrad_edu's DataLoader, as the engine's tensor type."""
    return tensor if torch is tinygrad_edu else torch.from_numpy(tensor.numpy())


def compiled_step(torch, model, criterion, optimizer):
    """The lecture's training step as one function, captured and replayed by tinygrad_edu.jit
    (the same numbers as the loop in ``train_epoch``, bit for bit, in less time); None on the
    NumPy backend, where there are no C kernels to replay and the loop runs as it is."""
    if tinygrad_edu.backend.name() != "c":
        return None

    @tinygrad_edu.jit
    def step(inputs, labels):
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss
    return step


def add_jit_arg(parser):
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, default=True,
                        help="run tinygrad_edu's training step through tinygrad_edu.jit (the same "
                             "numbers, faster); --no-jit runs the lecture's loop eagerly")


def train_epoch(torch, model, loader, criterion, optimizer, epoch, log_every=2000, log=print, step=None):
    """One pass over ``loader``; prints the lecture's ``[epoch, batch] loss`` lines. Returns the
    mean training loss over the epoch. ``step`` (from ``compiled_step``) replaces the lecture's
    four lines when given."""
    running_loss, total_loss, steps = 0.0, 0.0, 0
    for i, (inputs, labels) in enumerate(loader):
        inputs, labels = to_engine(torch, inputs), to_engine(torch, labels)
        if step is not None:
            loss = step(inputs, labels)
        else:
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


def show_predictions(torch, model, images, labels, path):
    """The lecture's look at a few test images: the GroundTruth and Prediction lines, and the same
    as a figure saved at ``path`` (wrong predictions in red). Returns the figure's path."""
    with torch.no_grad():
        _, predicted = torch.max(model(to_engine(torch, images)), 1)
    print('GroundTruth')
    print("    " + ' '.join('%3s' % label.item() for label in labels))
    print("Prediction")
    print("    " + ' '.join('%3s' % label.item() for label in predicted))
    return save_prediction_figure(images, labels, predicted.numpy(), path)


def seeded_loaders(args):
    """MNIST's training and test loaders for an example's ``args``: the training order comes from one
    generator seeded with ``args.seed``, the same for both engines."""
    train_data, test_data = load_mnist(args.data_dir, download=args.download)
    return (DataLoader(train_data, batch_size=args.batch_size, shuffle=True, seed=args.seed),
            DataLoader(test_data, batch_size=args.batch_size))


def finish(torch, model, test_loader, args, script, epoch_seconds, /, shown=None, **settings):
    """The lecture's last cells and the run's record: the GroundTruth/Prediction lines and figure of
    the first test batch (its first ``shown`` images), the test accuracy, and a summary in
    ``--out``, ``SCRIPT_ENGINE_seedN.json``: the run's arguments and ``settings``, the accuracy and
    the epoch times. Returns 0, the script's exit status."""
    images, labels = next(iter(test_loader))
    name = f"{args.engine}_seed{args.seed}"
    figure = show_predictions(torch, model, images[:shown], labels[:shown], args.out / f"predictions_{name}.png")

    n_correct, n_predict = evaluate(torch, model, test_loader)
    print(f"{n_correct}/{n_predict}")
    print(f"Accuracy: {n_correct/n_predict:.3f}")

    summary = {"engine": args.engine, "backend": torch.backend.name() if args.engine == "tinygrad_edu" else "torch",
               "seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
               **settings, "accuracy": n_correct / n_predict, "seconds_per_epoch": epoch_seconds,
               "figure": str(figure)}
    path = args.out / f"{script}_{name}.json"
    atomic_write_text(path, json.dumps(summary, indent=2))
    print(f"saved {figure} and {path}")
    return 0


def run_until_interrupted(run, args):
    """``run(args)``, an example's whole run, and its exit status; Ctrl-C ends it with one line and
    status 130 (the figure and summary are written only at the end, so nothing is half-written)."""
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the {args.engine} run stopped (its figure and summary are written only at "
              f"the end)", file=sys.stderr)
        return 130


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


def add_data_args(parser):
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four MNIST IDX files (default: $TINYGRAD_EDU_DATA, else "
                             "the user cache, downloading what is missing)")
    parser.add_argument("--download", action="store_true",
                        help="fetch missing MNIST files into --data-dir from the mirrors")


def check_data_args(parser, args):
    """After ``parse_args``: fill ``args.data_dir`` from $TINYGRAD_EDU_DATA and refuse a folder
    that is a file, or that does not exist when nothing is to be downloaded into it."""
    source = "--data-dir"
    if args.data_dir is None and os.environ.get("TINYGRAD_EDU_DATA"):
        args.data_dir, source = os.environ["TINYGRAD_EDU_DATA"], "TINYGRAD_EDU_DATA"
    if args.data_dir is None:
        return
    path = Path(args.data_dir)
    if path.exists() and not path.is_dir():
        parser.error(f"{source} {path} is a file, not a folder: give the folder that holds the four "
                     f"MNIST IDX files")
    if not path.exists() and not args.download:
        parser.error(f"{source} {path} does not exist (it should be the folder holding the four MNIST "
                     f"IDX files; add --download to fetch them into it)")


def add_common_args(parser, out_default, out_help="where figures and results go", epochs=10, batch_size=12,
                    lr=0.01):
    """--epochs, --batch-size, --lr (their defaults: the lecture's, unless given), --jit, the data
    flags, --out."""
    parser.add_argument("--epochs", type=positive_int, default=epochs)
    parser.add_argument("--batch-size", type=positive_int, default=batch_size)
    parser.add_argument("--lr", type=positive_float, default=lr)
    add_jit_arg(parser)
    add_data_args(parser)
    parser.add_argument("--out", type=Path, default=out_default and Path(out_default), help=out_help)


def seconds_since(start):
    return time.perf_counter() - start

