"""Pictures: ``make_grid`` (like torchvision's) and the lecture's GroundTruth/Prediction figure."""

import math
from pathlib import Path

import numpy as np

from ..tensor import Tensor
from ..utils.files import atomic_path


def make_grid(images, nrow=8, padding=2, pad_value=0.0):
    """Tile a batch of images (N x C x H x W) into one C x H' x W' image, ``nrow`` per row.

    As in torchvision: one-channel images become three channels, every image gets ``padding``
    pixels of ``pad_value`` around it, and the grid has ceil(N / nrow) rows. One image (H x W,
    C x H x W, or a batch of one) comes back as it is, in three channels, without padding.
    """
    arr = images.data if isinstance(images, Tensor) else np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or len(arr) == 0:
        raise ValueError(f"make_grid expects N x C x H x W images with N >= 1, got shape {arr.shape}")
    if arr.shape[1] == 1:
        arr = np.repeat(arr, 3, axis=1)
    if len(arr) == 1:
        return Tensor._make(arr[0], False, None)
    n, c, h, w = arr.shape
    columns = min(nrow, n)
    rows = math.ceil(n / columns)
    cell_h, cell_w = h + padding, w + padding
    grid = np.full((c, rows * cell_h + padding, columns * cell_w + padding), pad_value, dtype=arr.dtype)
    for k in range(n):
        y, x = divmod(k, columns)
        top, left = y * cell_h + padding, x * cell_w + padding
        grid[:, top:top + h, left:left + w] = arr[k]
    return Tensor._make(grid, False, None)


def atomic_savefig(fig, path, **kwargs):
    """Save a matplotlib figure to ``path`` via a temporary file, so no half-written PNG is left."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **kwargs)


def save_prediction_figure(images, labels, predicted, path):
    """The lecture's test figure: a row of images titled with the true and the predicted labels.

    Wrong predictions are marked in red. Returns the path written. The figure is a
    ``matplotlib.figure.Figure`` of its own, not one of pyplot's: drawing it leaves the user's
    backend and pyplot's figures (a notebook's ``plt.show()``) as they were.
    """
    from matplotlib.figure import Figure

    labels = [int(v) for v in (labels.data if isinstance(labels, Tensor) else labels)]
    predicted = [int(v) for v in (predicted.data if isinstance(predicted, Tensor) else predicted)]
    if len(labels) != len(predicted):
        raise ValueError(f"{len(labels)} labels but {len(predicted)} predictions")
    grid = make_grid(images, nrow=len(labels)).data
    fig = Figure(figsize=(max(4, 0.9 * len(labels)), 2.2))
    ax = fig.subplots()
    ax.imshow(np.transpose(grid, (1, 2, 0)))
    ax.set_axis_off()
    cell = grid.shape[2] / len(labels)
    for k, (truth, guess) in enumerate(zip(labels, predicted)):
        x = (k + 0.5) * cell
        ax.text(x, -4, str(truth), ha="center", va="bottom", fontsize=11)
        ax.text(x, grid.shape[1] + 2, str(guess), ha="center", va="top", fontsize=11,
                color="black" if truth == guess else "red")
    ax.text(-4, -4, "GroundTruth", ha="right", va="bottom", fontsize=10)
    ax.text(-4, grid.shape[1] + 2, "Prediction", ha="right", va="top", fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120, bbox_inches="tight")
    return Path(path)
