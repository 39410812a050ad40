"""Exceptions boltzkit raises: each names the problem and the fix."""

from __future__ import annotations


class BoltzkitError(Exception):
    """Base class for every error boltzkit raises on purpose."""


class DataError(BoltzkitError, ValueError):
    """The data cannot be used as given (shape, values, NaN, missing files)."""


class ConfigError(BoltzkitError, ValueError):
    """An option or configuration value is unknown or inconsistent."""


class ModelFileError(BoltzkitError):
    """A model or checkpoint file is missing, corrupted or not a boltzkit file."""


class TrainingDiverged(BoltzkitError, RuntimeError):
    """Parameters became NaN or infinite during training."""
