"""The exception tree of the training pipeline: one base, one subclass per way a stage fails."""

from __future__ import annotations


class TrainingError(Exception):
    """Base of every error the training pipeline raises on purpose."""


class DatasetError(TrainingError):
    """A dataset cannot be read as its format says: the text names the file (and line)."""


class CheckpointError(TrainingError):
    """A checkpoint cannot be read, or holds more than weights and plain data."""
