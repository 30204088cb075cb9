"""The exception tree of the fleet server."""

from __future__ import annotations


class FleetError(Exception):
    """Base of every error the fleet server raises on purpose."""


class StorageError(FleetError):
    """The database refused or failed an operation."""


class UnstorableError(StorageError):
    """The database refused the data itself (a value out of range, a violated constraint).

    Trying again cannot help, unlike a lost connection: the ingest worker isolates the message
    that caused it and drops it, counted, rather than retrying its batch for ever.
    """


class IngestError(FleetError):
    """The ingestion worker cannot reach the broker or the database."""


class BrokerAuthError(FleetError):
    """The broker's accounts cannot be changed: its files, its signal or its admin API failed."""
