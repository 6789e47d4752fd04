"""Shared fixtures: float64 random inputs and the MNIST directory.

Tests that need the real MNIST take the ``mnist_root`` fixture (or call ``require_mnist()``): on
a machine without the four IDX files they skip with one reason that says how to provide them,
and the summary at the end counts them. Tests of the reader itself write small IDX files of their
own and run everywhere.
"""

import os
from pathlib import Path

import numpy as np
import pytest

import tinygrad_edu as tg

REPO = Path(__file__).resolve().parent.parent
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
NO_MNIST = "needs MNIST"   # every skip for want of the data starts with this


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def leaf(rng, *shape, positive=False):
    """A float64 leaf that requires grad (gradcheck's favourite input)."""
    x = rng.standard_normal(shape)
    if positive:
        x = np.abs(x) + 0.5
    return tg.tensor(x, requires_grad=True)


def mnist_dir():
    """Where the tests find MNIST: $TINYGRAD_EDU_DATA, else ../shared/mnist beside the repo."""
    return Path(os.environ.get("TINYGRAD_EDU_DATA", REPO.parent / "shared" / "mnist"))


def mnist_missing():
    """The MNIST files (gzipped or not) that are not in ``mnist_dir()``."""
    root = mnist_dir()
    return [name for name in MNIST_FILES
            if not any((folder / (name + ext)).is_file()
                       for folder in (root, root / "MNIST" / "raw") for ext in (".gz", ""))]


def require_mnist():
    """Skip the calling test, with one reason saying how to provide the data, if MNIST is absent."""
    missing = mnist_missing()
    if missing:
        pytest.skip(f"{NO_MNIST}: {len(missing)} of its 4 IDX files are not in {mnist_dir()}; "
                    f"set TINYGRAD_EDU_DATA to a folder holding them, or fetch them with "
                    f"`python -c \"import tinygrad_edu.vision as v; v.datasets.MNIST(download=True)\"`")
    return mnist_dir()


@pytest.fixture
def mnist_root():
    """The folder with the real MNIST files; the test skips (with the reason) without them."""
    return require_mnist()


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    for_data = sum(1 for report in skipped if NO_MNIST in str(report.longrepr))
    if for_data:
        terminalreporter.write_line(f"{for_data} tests skipped for want of MNIST: set TINYGRAD_EDU_DATA "
                                    f"to the folder with its four IDX files to run them", yellow=True)
