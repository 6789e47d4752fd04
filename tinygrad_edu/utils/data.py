"""``Dataset``, ``TensorDataset`` and ``DataLoader``, shaped like ``torch.utils.data``.

A DataLoader cuts a dataset into mini-batches of ``(inputs, labels)`` tensors. Datasets that keep
their samples in arrays (``TensorDataset``, ``vision.datasets.MNIST``) offer ``get_batch(indices)``:
the loader then builds each batch with one fancy-index per array instead of a Python loop over
samples, which matters at batch size 12, where a step of the lecture's MLP takes a few hundred
microseconds.
"""

import math

import numpy as np

from .. import random as _random
from ..tensor import Tensor


class Dataset:
    """A sequence of samples: subclasses define ``__len__`` and ``__getitem__``."""

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError

    def get_batch(self, indices):
        """The samples at ``indices`` as a tuple of stacked arrays, or ``None`` when this dataset
        cannot do better than one ``__getitem__`` per sample."""
        return None


class TensorDataset(Dataset):
    """Samples are the rows of the given tensors (or arrays), which share their first dimension."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        self.arrays = [t.data if isinstance(t, Tensor) else np.asarray(t) for t in tensors]
        sizes = {len(a) for a in self.arrays}
        if len(sizes) != 1:
            raise ValueError(f"TensorDataset: all tensors need the same first dimension, got "
                             f"{[a.shape for a in self.arrays]}")

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(Tensor._make(np.asarray(a[index]), False, None) for a in self.arrays)

    def get_batch(self, indices):
        return tuple(a[indices] for a in self.arrays)


def _collate(samples):
    """Stack a list of samples (tuples of tensors or numbers) into a tuple of arrays."""
    columns = zip(*samples)
    return tuple(np.stack([s.data if isinstance(s, Tensor) else np.asarray(s) for s in column])
                 for column in columns)


class DataLoader:
    """Iterate over ``dataset`` in mini-batches of ``batch_size``.

    ``shuffle=True`` draws a new order every epoch from ``generator`` (a ``numpy.random.Generator``),
    or from a private generator seeded with ``seed``, or else from the library's generator (so
    ``tinygrad_edu.manual_seed`` makes it reproducible). The last partial batch is kept unless
    ``drop_last``.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, generator=None, seed=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if generator is not None and seed is not None:
            raise ValueError("give either generator or seed, not both")
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.generator = np.random.default_rng(seed) if seed is not None else generator

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self):
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return (self.generator or _random.generator()).permutation(n)

    def __iter__(self):
        return _BatchIterator(self)


class _BatchIterator:
    """One pass over a DataLoader. Also has ``next()`` for older code (``dataiter.next()``)."""

    def __init__(self, loader):
        self.loader, self.order, self.start = loader, loader._order(), 0

    def __iter__(self):
        return self

    def __next__(self):
        loader, size = self.loader, self.loader.batch_size
        end = min(self.start + size, len(self.order))
        if self.start >= end or (loader.drop_last and end - self.start < size):
            raise StopIteration
        indices = self.order[self.start:end]
        self.start = end
        arrays = loader.dataset.get_batch(indices)
        if arrays is None:
            arrays = _collate([loader.dataset[int(i)] for i in indices])
        return tuple(Tensor._make(a, False, None) for a in arrays)

    next = __next__


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices`` (e.g. a quick run on part of MNIST)."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(dataset)):
            raise IndexError(f"Subset: indices must be in 0..{len(dataset) - 1}")

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]

    def get_batch(self, indices):
        return self.dataset.get_batch(self.indices[indices])
