"""The API's Prometheus metrics: devices and rollouts by status, counted in the database.

Every replica reports the same counts (they come from the one database), so dashboards and alert
rules (k3s/roadsign-fleet/dashboards/, templates/prometheusrule.yaml) take the max over replicas.
Counts are read fresh at each scrape; a status whose count fell to zero reports 0 rather than
keeping the last value it had, which a gauge child left alone would.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from sqlmodel import Session

from fleet_server import crud
from fleet_server.rollouts.values import RolloutStatus

DEVICE_STATUSES = ("online", "offline", "unknown", "decommissioned")
"""The statuses a device can have (models.Device.status); each is always reported."""


class ApiMetrics:
    """The registry `/metrics` serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.devices = Gauge(
            "roadsign_devices", "Devices by status.", ["status"], registry=self.registry
        )
        self.rollouts = Gauge(
            "roadsign_rollouts",
            "Staged rollouts by status (draft, running, paused, completed, aborted, rolled_back).",
            ["status"],
            registry=self.registry,
        )
        # Scrapes run on the server's thread pool: one sets and renders the gauges at a time.
        self._lock = threading.Lock()

    def render(self, session: Session) -> bytes:
        """The exposition text, with counts read in `session`."""
        devices = crud.count_devices_by_status(session)
        rollouts = crud.count_rollouts_by_status(session)
        with self._lock:
            for status in sorted({*DEVICE_STATUSES, *devices}):
                self.devices.labels(status=status).set(devices.get(status, 0))
            for rollout_status in RolloutStatus:
                self.rollouts.labels(status=rollout_status.value).set(
                    rollouts.get(rollout_status.value, 0)
                )
            return generate_latest(self.registry)
