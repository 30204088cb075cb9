"""The exception tree of the fleet server."""

from __future__ import annotations


class FleetError(Exception):
    """Base of every error the fleet server raises on purpose."""


class StorageError(FleetError):
    """The database refused or failed an operation."""


class IngestError(FleetError):
    """The ingestion worker cannot reach the broker or the database."""
