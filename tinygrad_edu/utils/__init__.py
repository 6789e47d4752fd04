"""Utilities above the engine: ``utils.data`` (datasets and loaders), ``utils.files`` (atomic writes)."""

from . import data, files

__all__ = ["data", "files"]
