"""The exception tree of the training pipeline: one base, one subclass per way a stage fails."""

from __future__ import annotations


class TrainingError(Exception):
    """Base of every error the training pipeline raises on purpose."""


class DatasetError(TrainingError):
    """A dataset cannot be read as its format says: the text names the file (and line)."""


class EvaluationSceneError(DatasetError):
    """A scene kept for scoring only (GTSDB 00600-00899) was handed to a training step."""


class CheckpointError(TrainingError):
    """A checkpoint cannot be read, or holds more than weights and plain data."""
