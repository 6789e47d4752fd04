"""Shared fixtures: float64 random inputs and the MNIST directory."""

import os
from pathlib import Path

import numpy as np
import pytest

import tinygrad_edu as tg

REPO = Path(__file__).resolve().parent.parent


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
