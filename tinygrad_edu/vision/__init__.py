"""Vision helpers shaped like torchvision: ``datasets.MNIST``, ``transforms``, ``utils.make_grid``."""

from . import datasets, transforms, utils

__all__ = ["datasets", "transforms", "utils"]
