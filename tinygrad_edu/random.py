"""One random generator for the whole library, so ``manual_seed`` makes runs reproducible:
weight initialization, ``randn``/``rand`` and DataLoader shuffling all draw from it."""

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Reseed the generator; everything random afterwards repeats exactly."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def generator():
    """The current NumPy ``Generator``."""
    return _generator
