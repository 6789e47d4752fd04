"""Utilities above the engine: ``utils.data`` (datasets and loaders), ``utils.files`` (atomic writes),
and ``progress_bars_wanted``."""

import sys

from . import data, files

__all__ = ["data", "files", "progress_bars_wanted"]


def progress_bars_wanted():
    """Whether a tqdm bar would be seen: on a terminal, or in a notebook (Jupyter's kernel is
    imported as ipykernel), but not in a log file, where each redraw would be a line."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules
