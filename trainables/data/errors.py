"""The error every dataset function raises: a dataset name, location, split or resolution that
cannot be served, with one clear message. Its own module so that the dataset registry
(:mod:`trainables.data.datasets`), the toys and the file checks name it without importing torch."""

from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A dataset name, location, split or resolution that cannot be served (one clear message)."""
