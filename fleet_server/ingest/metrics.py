"""The ingestion worker's Prometheus metrics, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    """Rates, rejects by reason, batch latency and lag of one worker."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ingested = Counter(
            "roadsign_ingested_total",
            "Messages stored, by kind: readings, health, ota_status and config_reported rows "
            "(new ones), status changes applied.",
            ["kind"],
            registry=r,
        )
        self.rejected = Counter(
            "roadsign_ingest_rejected_total", "Messages dropped, by reason.", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "roadsign_ingest_duplicates_total", "Redelivered messages already stored.", registry=r
        )
        self.storage_errors = Counter(
            "roadsign_ingest_storage_errors_total",
            "Database operations that failed and were retried (storing a batch, reading the "
            "device list).",
            registry=r,
        )
        self.flush_errors = Counter(
            "roadsign_ingest_flush_errors_total",
            "Unexpected errors in the flusher, by stage: store (retried), acknowledge and "
            "republish (that message skipped), flush (the batch left to redelivery).",
            ["stage"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "roadsign_ingest_batch_seconds", "Time to store and acknowledge one batch.", registry=r
        )
        self.lag_seconds = Gauge(
            "roadsign_ingest_lag_seconds",
            "Age of the oldest message of the last batch.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "roadsign_ingest_queue_depth", "Messages received, not yet stored.", registry=r
        )
        self.connected = Gauge("roadsign_ingest_broker_connected", "1 while connected.", registry=r)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (for tests and logs)."""
        found = self.registry.get_sample_value(name, labels)
        return float(found) if found is not None else 0.0
