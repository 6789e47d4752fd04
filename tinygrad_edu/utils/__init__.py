"""Utilities above the engine: ``tinygrad_edu.utils.data`` (datasets and loaders)."""

from . import data

__all__ = ["data"]
