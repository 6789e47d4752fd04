"""The road a gradient takes: every Python function ``loss.backward()`` passes through.

    python examples/gradient_route.py [--fast] [--batch-size N]

Builds the lecture's MNIST MLP (784-512-256-128-64-10 with ReLU), runs one batch of random images
through it and ``nn.CrossEntropyLoss``, and records each Python function that ``loss.backward()``
calls (with ``sys.setprofile``) until ``fc1.weight.grad`` is filled in. On the plain path (the
default here: ``set_fast(False)``) that is the engine (tensor.py) and the ops (ops.py), plus a few
of NumPy's own Python functions; ``--fast`` shows the fast layer and the C backend taking over.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

import tinygrad_edu as torch
from tinygrad_edu import nn

PACKAGE = Path(torch.__file__).resolve().parent


class MLP(nn.Module):
    """The lecture's network for MNIST."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 512), nn.Linear(512, 256), nn.Linear(256, 128)
        self.fc4, self.fc5 = nn.Linear(128, 64), nn.Linear(64, 10)

    def forward(self, x):
        x = nn.functional.relu(self.fc1(x))
        x = nn.functional.relu(self.fc2(x))
        x = nn.functional.relu(self.fc3(x))
        x = nn.functional.relu(self.fc4(x))
        return self.fc5(x)


def where(code):
    """``tinygrad_edu/tensor.py``, ``numpy/...`` or the file's name: where a function lives."""
    path = Path(code.co_filename).resolve()
    if path.is_relative_to(PACKAGE):
        return "tinygrad_edu/" + path.relative_to(PACKAGE).as_posix()
    if "numpy" in path.parts:
        return "numpy/" + path.name
    return path.name


def qualified_name(frame):
    """``NLLLoss.backward``, ``Tensor._make``, ``backward``: the function's name with its class.
    Python 3.11 has it (``co_qualname``); before, it is looked up in the classes of the call's
    first argument (``self``, ``cls``, or an op's ``ctx``)."""
    code = frame.f_code
    return getattr(code, "co_qualname", None) or name_from_classes(code, frame.f_locals)


def name_from_classes(code, local_variables):
    """The qualified name of ``code``'s function found in its first argument's classes (Python
    3.10), or its plain name (a module-level function)."""
    if code.co_argcount:
        first = local_variables.get(code.co_varnames[0])
        for klass in (first if isinstance(first, type) else type(first)).__mro__:
            function = klass.__dict__.get(code.co_name)
            function = getattr(function, "__func__", getattr(function, "fget", function))
            if getattr(function, "__code__", None) is code:   # staticmethod, classmethod, property
                return f"{klass.__name__}.{code.co_name}"
    return code.co_name


def trace_backward(loss):
    """``{(file, function): calls}`` for every Python function ``loss.backward()`` runs, in the
    order each is first called."""
    calls = {}

    def profile(frame, event, arg):
        if event == "call":
            key = (where(frame.f_code), qualified_name(frame))
            calls[key] = calls.get(key, 0) + 1

    sys.setprofile(profile)
    try:
        loss.backward()
    finally:
        sys.setprofile(None)
    return calls


def lecture_loss(batch_size, seed=0):
    """The lecture MLP's cross-entropy on one batch of random images and labels, and the model."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MLP()
    images = torch.tensor(rng.random((batch_size, 784), dtype=np.float32))
    labels = torch.tensor(rng.integers(0, 10, batch_size))
    return nn.CrossEntropyLoss()(model(images), labels), model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="use the fast layer (on the C kernels)")
    parser.add_argument("--batch-size", type=int, default=12)
    args = parser.parse_args(argv)
    with torch.set_fast(args.fast):
        loss, model = lecture_loss(args.batch_size)
        calls = trace_backward(loss)
    path = "fast layer" if args.fast and torch.fast.enabled() else "plain path"
    ours = {key: n for key, n in calls.items() if key[0].startswith("tinygrad_edu/")}
    files = sorted({file for file, _ in ours})
    print(f"loss.backward() on the {path} ({torch.backend.name()} backend), lecture MLP, batch "
          f"{args.batch_size}: {len(ours)} functions of tinygrad_edu in {len(files)} files "
          f"({', '.join(files)}), {len(calls) - len(ours)} of NumPy's\n")
    width = max(len(f"{file}  {name}") for file, name in calls)
    for (file, name), n in calls.items():
        print(f"  {f'{file}  {name}':<{width}}  {n:>3} call{'s' if n > 1 else ''}")
    grad = model.fc1.weight.grad
    print(f"\nfc1.weight.grad: shape {grad.shape}, |grad| = {float(np.abs(grad.data).sum()):.6g}")


if __name__ == "__main__":
    main()
