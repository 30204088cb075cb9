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


class BatchAbandoned(IngestError):  # noqa: N818 - not a fault: the worker was told to stop
    """The worker stopped while a batch could not be stored; nothing of it was acknowledged.

    The broker keeps unacknowledged messages in the worker's session and delivers them again.
    """


class TokenError(FleetError):
    """A token cannot be issued or revoked as asked (an expiry in the past, no such token)."""


class IssuerNotLive(TokenError):  # noqa: N818 - reads as the condition it reports
    """The token issuing another was revoked or expired before the new one was stored."""


class MqttSetupError(FleetError):
    """A server-side MQTT client cannot be set up: a bad port in its URL, a bad CA file."""


class BrokerAuthError(FleetError):
    """The broker's accounts cannot be changed: its files, its signal or its admin API failed."""


class LiveFeedError(FleetError):
    """A live-feed stream's subscription ended: its client fell behind, the database was lost,
    or the server is shutting down. Its client reconnects and starts afresh."""


class LiveFeedFullError(LiveFeedError):
    """As many live-feed streams are open as this process serves (``http.max_live_streams``)."""


class RepositoryError(FleetError):
    """The TUF repository cannot do what was asked (not initialised, a bad bundle, ...)."""


class RepositoryNotInitialised(RepositoryError):  # noqa: N818 - reads as the condition
    """No root metadata is stored yet: ``roadsign-fleet keys init`` has not run."""


class BundleError(RepositoryError):
    """A model bundle cannot be published: its index is missing or an artifact's hash differs."""


class SigningKeyError(RepositoryError):
    """A signing key file cannot be read or written: missing, malformed, a wrong passphrase."""


# --- rollouts ---------------------------------------------------------------------------------


class RolloutError(FleetError):
    """A staged rollout cannot do what was asked."""


class RolloutCommandRefused(RolloutError):  # noqa: N818 - reads as the condition it reports
    """A rollout's status does not allow the command (resuming a completed rollout, say)."""


class RolloutStateInvalid(RolloutError):  # noqa: N818 - reads as the condition it reports
    """A stored rollout state does not validate: written by another version, or damaged."""


class RolloutNotFound(RolloutError):  # noqa: N818 - reads as the condition it reports
    """No rollout has that id."""


class RolloutRequestInvalid(RolloutError):  # noqa: N818 - reads as the condition it reports
    """A rollout request names an unknown model, selects no device, or cannot be built."""


class RolloutConflict(RolloutError):  # noqa: N818 - reads as the condition it reports
    """A rollout request clashes with what exists: its id is taken, or a running rollout
    already covers some of its devices."""
