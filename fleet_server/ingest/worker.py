"""The ingestion worker: MQTT in, PostgreSQL rows out, nothing lost, nothing counted twice.

Replicas share the load through an MQTT v5 shared subscription. Every message is validated by
`fleet_protocol`; a bad one is counted by reason and dropped (acknowledged, so the broker forgets
it) and never stops the worker. Good messages are batched; a batch is inserted in one
transaction that skips (device_id, seq) pairs already stored, and only after it commits are its
messages acknowledged to the broker (paho manual acks). A worker killed mid-batch has
acknowledged nothing of it: the broker redelivers, the unique key drops what was already stored.
New readings are then republished once on the fleet-wide topic.

Messages of devices that are not enrolled, or decommissioned, are rejected by those reasons. The
worker's list of devices is read again at least every ``ingest.known_devices_ttl_s``, so a
decommissioning takes effect within that bound whether or not the server manages the broker's
credentials; a device missing from it (enrolled a moment ago) is looked up at once.

A failure while storing (the database away, or an error nobody foresaw) is retried with backoff
and never ends the flusher; until it succeeds nothing of the batch is acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from opentelemetry.sdk.trace import TracerProvider
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine

from fleet_protocol.codec import decode_device_message, encode
from fleet_protocol.exceptions import ProtocolError
from fleet_protocol.messages import (
    Envelope,
    HealthReport,
    OtaStatus,
    Reading,
    ReportedConfig,
    StatusMessage,
)
from fleet_protocol.topics import FLEET_READINGS_TOPIC, server_subscriptions, status_snapshot_filter
from fleet_server import crud
from fleet_server.db import session_scope
from fleet_server.exceptions import BatchAbandoned, StorageError, UnstorableError
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.mqtt_client import BufferedReadClient, configure_client
from fleet_server.observability import make_tracer_provider
from fleet_server.settings import ServerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

UNKNOWN_DEVICE = "unknown_device"
DECOMMISSIONED = "decommissioned"
UNSTORABLE = "unstorable"
POLL_S = 0.005
"""How often the flusher looks for a full batch."""
LEAVE_TIMEOUT_S = 5.0
"""Longest a stopping worker waits for the broker to confirm it left its share group, and then
for what the broker had queued for it (each within ``ingest.stop_timeout_s`` overall)."""
DRAIN_QUIET_S = 0.5
"""A stopping worker that received nothing for this long, with nothing unacknowledged, is done."""
RETRY_FIRST_S, RETRY_MAX_S = 0.1, 5.0
"""Backoff of a failed store: first wait, then doubling up to the longest (seconds)."""


@dataclass(frozen=True, slots=True)
class Pending:
    """A decoded message waiting for its batch to commit before it is acknowledged."""

    mid: int
    qos: int
    message: Envelope
    received: float


@dataclass
class Batch:
    """Rows and device updates of one transaction."""

    readings: list[dict[str, Any]] = field(default_factory=list)
    reading_messages: dict[tuple[str, int], Reading] = field(default_factory=dict)
    health: list[dict[str, Any]] = field(default_factory=list)
    ota_statuses: list[dict[str, Any]] = field(default_factory=list)
    config_reports: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[StatusMessage] = field(default_factory=list)
    last_seen: dict[str, datetime] = field(default_factory=dict)
    models: dict[str, tuple[str, str]] = field(default_factory=dict)


def reading_row(message: Reading) -> dict[str, Any]:
    """A reading message as a row of the readings table."""
    x1, y1, x2, y2 = message.bbox
    return {
        "device_id": message.device_id,
        "seq": message.seq,
        "observed_at": message.timestamp,
        "sign_type": message.sign_type.value,
        "gtsrb_class_id": message.gtsrb_class_id,
        "value": message.value,
        "unit": message.unit,
        "text": message.text,
        "confidence": message.confidence,
        "sources_disagree": message.sources_disagree,
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "track_id": message.track_id,
        "frames_seen": message.frames_seen,
        "model_version": message.model.version,
        "model_sha256": message.model.sha256,
        "lat": message.location.lat if message.location else None,
        "lon": message.location.lon if message.location else None,
        "crop_jpeg": message.crop_jpeg,
        "received_at": datetime.now(UTC),
    }


def health_row(message: HealthReport) -> dict[str, Any]:
    """A health report as a row of the health table."""
    shadow = message.shadow
    return {
        "device_id": message.device_id,
        "seq": message.seq,
        "observed_at": message.timestamp,
        "received_at": datetime.now(UTC),
        "fps": message.fps,
        "cpu_percent": message.cpu_percent,
        "rss_mb": message.rss_mb,
        "temperature_c": message.temperature_c,
        "disk_free_mb": message.disk_free_mb,
        "camera_state": message.camera_state.value,
        "outbox_depth": message.outbox_depth,
        "outbox_dropped": message.outbox_dropped,
        "frames_dropped": message.frames_dropped,
        "uptime_s": message.uptime_s,
        "stage_latency_ms": {k.value: v.model_dump() for k, v in message.stage_latency_ms.items()},
        "shadow_previous_model": shadow.previous_model.version if shadow else None,
        "shadow_frames_compared": shadow.frames_compared if shadow else None,
        "shadow_tracks_compared": shadow.tracks_compared if shadow else None,
        "shadow_tracks_agreeing": shadow.tracks_agreeing if shadow else None,
    }


def ota_status_row(message: OtaStatus) -> dict[str, Any]:
    """An OTA status report as a row of the OTA status table."""
    running = message.running_model
    return {
        "device_id": message.device_id,
        "seq": message.seq,
        "observed_at": message.timestamp,
        "command_id": message.command_id,
        "state": message.state.value,
        "model_version": message.model_version,
        "detail": message.detail,
        "running_model_version": running.version if running else None,
        "running_model_sha256": running.sha256 if running else None,
        "rollout_id": message.rollout_id,
        "received_at": datetime.now(UTC),
    }


def config_report_row(message: ReportedConfig) -> dict[str, Any]:
    """A config report as a row of the config report table."""
    return {
        "device_id": message.device_id,
        "seq": message.seq,
        "observed_at": message.timestamp,
        "config_version": message.config_version,
        "applied": message.applied,
        "errors": list(message.errors),
        "received_at": datetime.now(UTC),
    }


class IngestWorker:
    """One ingestion replica."""

    def __init__(
        self,
        settings: ServerSettings,
        engine: Engine,
        metrics: IngestMetrics,
        *,
        client_id: str,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        provider = tracer_provider or make_tracer_provider(
            "roadsign-fleet-ingest", otlp_endpoint=settings.telemetry.otlp_endpoint
        )
        self._tracer = provider.get_tracer("fleet_server.ingest")
        # A deque, not a queue.Queue: appends from paho's thread need no lock or wake-up (a
        # Condition per message cost a tenth of the worker); the flusher polls it.
        self._queue: deque[Pending] = deque()
        # Read by `stop` to know when the broker has nothing more for this worker. Two counters,
        # each written by one thread only (paho's, the flusher's), so neither needs a lock.
        # Settled: acknowledged, or given up on by the flusher's last guard (left unacknowledged:
        # the broker sends those again only to the next session, so the drain must not wait).
        self._queued_total = 0
        self._settled_total = 0
        self._last_received = -float("inf")
        self._storage_failing = False
        self._stop = threading.Event()
        self._devices: dict[str, str] = {}  # device id -> status, read at `_devices_at`
        self._devices_at = -float("inf")
        self._client = BufferedReadClient(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        self._address = configure_client(self._client, settings.broker)
        self._client.on_connect = self._connected
        self._client.on_message = self._received
        self._client.on_subscribe = self._subscribed
        self._ready = threading.Event()
        # No client-side window for republished readings: with one, paho rescans every message
        # awaiting its PUBACK on each PUBACK (quadratic in a thousand-reading batch, a fifth of
        # the worker's time). Mosquitto acknowledges QoS 1 at once and holds only QoS 2 to its
        # receive maximum, so nothing piles up.
        self._client.max_inflight_messages_set(0)
        self._flusher = threading.Thread(target=self._flush_loop, name="ingest-flush", daemon=True)

    def start(self) -> IngestWorker:
        """Connect (keeping the session across restarts) and start flushing."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.settings.ingest.session_expiry_s
        # The broker drops a packet larger than this instead of sending it: an oversized
        # publish never costs this worker the memory or the read (MQTT v5 maximum packet size).
        properties.MaximumPacketSize = self.settings.ingest.max_packet_bytes
        self._client.connect_async(
            self._address.host,
            self._address.port,
            keepalive=30,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()
        self._flusher.start()
        return self

    def stop(self) -> None:
        """Leave the share group, store what the broker already sent, then disconnect.

        All of it within ``ingest.stop_timeout_s`` (an orchestrator kills the process at the
        end of its grace period): what is not stored by then stays unacknowledged, and the
        broker delivers it again to the next session under this client id.
        """
        deadline = time.monotonic() + self.settings.ingest.stop_timeout_s
        self._leave_share_group(deadline)
        self._stop.set()
        self._flusher.join(max(0.0, deadline - time.monotonic()))
        if self._flusher.is_alive():
            log.warning("stopped before the last batch was stored; it stays for redelivery")
        self._client.disconnect()
        self._client.loop_stop()

    def _leave_share_group(self, deadline: float) -> None:
        # Mosquitto 2.0 goes on handing a stopped member's turn of the group's messages to its
        # persistent session: a worker that stops for good would strand its share until the
        # session expires. Unsubscribed first, it gets no more turns; what the broker had
        # already queued for it still arrives, so it is stored before the connection goes.
        if not self._ready.is_set():
            return  # never subscribed: nothing is routed to this worker
        left = threading.Event()
        self._client.on_unsubscribe = lambda *_: left.set()
        result, _ = self._client.unsubscribe(server_subscriptions(self.settings.broker.share_group))
        wait = min(LEAVE_TIMEOUT_S, deadline - time.monotonic())
        if result != mqtt.MQTT_ERR_SUCCESS or not left.wait(max(0.0, wait)):
            log.warning("could not leave the share group; its queue waits for this client id")
            return
        drain_until = min(time.monotonic() + LEAVE_TIMEOUT_S, deadline)
        while time.monotonic() < drain_until and not self._drained():
            time.sleep(POLL_S)

    def _drained(self) -> bool:
        # Nothing waits for its batch, nothing is unacknowledged, and the broker has sent
        # nothing for a while: with no window left full, a queued message would have come. A
        # batch the database refuses now cannot be acknowledged: it stays with the session,
        # which the broker redelivers when a worker connects under this client id again.
        return (
            not self._queue
            and (self._settled_total == self._queued_total or self._storage_failing)
            and time.monotonic() - self._last_received > DRAIN_QUIET_S
        )

    def _connected(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the ingest connection: %s", reason)
            return
        self.metrics.connected.set(1)
        filters = [
            *server_subscriptions(self.settings.broker.share_group),
            # Retained statuses are not delivered on shared subscriptions: read them too.
            status_snapshot_filter(),
        ]
        self._ready.clear()
        client.subscribe([(topic_filter, 1) for topic_filter in filters])

    def _subscribed(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:
            log.error("broker refused ingest subscriptions: %s", refused)
            return
        self._ready.set()

    def wait_ready(self, timeout: float) -> bool:
        """Block until connected and subscribed (what a readiness probe waits for)."""
        return self._ready.wait(timeout)

    def _received(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            _, decoded = decode_device_message(
                message.topic,
                bytes(message.payload),
                max_bytes=self.settings.ingest.max_payload_bytes,
            )
        except ProtocolError as e:
            self.metrics.rejected.labels(reason=e.reason).inc()
            client.ack(message.mid, message.qos)
            return
        self._queued_total += 1
        self._last_received = time.monotonic()
        self._queue.append(Pending(message.mid, message.qos, decoded, self._last_received))

    def _device_statuses(self, device_ids: set[str]) -> dict[str, str]:
        # The whole list is read again once older than its TTL, so that a decommissioning takes
        # effect within it. A device not in the list (enrolled a moment ago, or never) is looked
        # up alone, by the unique index: cheap enough for every batch that has one.
        if time.monotonic() - self._devices_at > self.settings.ingest.known_devices_ttl_s:
            with session_scope(self.engine) as session:
                self._devices = crud.device_statuses(session)
            self._devices_at = time.monotonic()
        missing = device_ids - self._devices.keys()
        if missing:
            with session_scope(self.engine) as session:
                self._devices.update(crud.device_statuses(session, device_ids=missing))
        return self._devices

    def _collect(self) -> list[Pending]:
        ingest = self.settings.ingest
        deadline = time.monotonic() + ingest.batch_interval_s
        while len(self._queue) < ingest.batch_size and time.monotonic() < deadline:
            time.sleep(POLL_S)
        items: list[Pending] = []
        while self._queue and len(items) < ingest.batch_size:
            items.append(self._queue.popleft())
        return items

    def _from_known_devices(self, items: list[Pending]) -> list[Pending]:
        statuses = self._retrying(
            "reading the device list",
            lambda: self._device_statuses({p.message.device_id for p in items}),
        )
        kept = []
        for pending in items:
            status = statuses.get(pending.message.device_id)
            if status is None:
                self.metrics.rejected.labels(reason=UNKNOWN_DEVICE).inc()
            elif status == "decommissioned":
                self.metrics.rejected.labels(reason=DECOMMISSIONED).inc()
            else:
                kept.append(pending)
        return kept

    def _batch(self, items: list[Pending]) -> Batch:
        batch = Batch()
        for pending in items:
            message = pending.message
            seen = batch.last_seen.get(message.device_id)
            if seen is None or message.timestamp > seen:
                batch.last_seen[message.device_id] = message.timestamp
            if isinstance(message, Reading):
                batch.readings.append(reading_row(message))
                batch.reading_messages[(message.device_id, message.seq)] = message
                batch.models[message.device_id] = (message.model.version, message.model.sha256)
            elif isinstance(message, HealthReport):
                batch.health.append(health_row(message))
                # A device that reads no signs (an empty road, after an OTA switch) still says
                # in its health which model it runs: the models API's "running on" follows it.
                if message.model is not None:
                    batch.models[message.device_id] = (message.model.version, message.model.sha256)
            elif isinstance(message, StatusMessage):
                batch.statuses.append(message)
            elif isinstance(message, OtaStatus):
                batch.ota_statuses.append(ota_status_row(message))
            elif isinstance(message, ReportedConfig):
                batch.config_reports.append(config_report_row(message))
        return batch

    def _commit(self, batch: Batch) -> list[Reading]:
        with session_scope(self.engine) as session:
            new_readings = crud.insert_readings(session, rows=batch.readings)
            new_health = crud.insert_health(session, rows=batch.health)
            new_ota = crud.insert_ota_statuses(session, rows=batch.ota_statuses)
            new_configs = crud.insert_config_reports(session, rows=batch.config_reports)
            crud.set_statuses(
                session,
                changes=[
                    crud.StatusChange(
                        device_id=status.device_id,
                        status=status.state.value,
                        at=status.timestamp,
                        agent_version=status.agent_version,
                    )
                    for status in batch.statuses
                ],
            )
            crud.mark_seen(session, last_seen=batch.last_seen, models=batch.models)
        stored = {
            "readings": (len(batch.readings), len(new_readings)),
            "health": (len(batch.health), len(new_health)),
            "ota_status": (len(batch.ota_statuses), len(new_ota)),
            "config_reported": (len(batch.config_reports), len(new_configs)),
        }
        for kind, (offered, new) in stored.items():
            self.metrics.ingested.labels(kind=kind).inc(new)
            self.metrics.duplicates.inc(offered - new)
        self.metrics.ingested.labels(kind="status").inc(len(batch.statuses))
        return [batch.reading_messages[key] for key in new_readings]

    def _retrying(self, what: str, operation: Callable[[], T]) -> T:
        """`operation`, tried again with backoff until it succeeds; `UnstorableError` passes.

        The database being away (`StorageError`) is what this is for. An unexpected error is
        retried too, not dropped: nothing of the batch is acknowledged until it is stored, so a
        worker stuck on a bug shows (its error counter and lag grow) and loses nothing.
        Stopping ends the retries with `BatchAbandoned`.
        """
        delay = RETRY_FIRST_S
        while True:
            try:
                result = operation()
                self._storage_failing = False
                return result
            except UnstorableError:
                raise  # the data, not the database: trying again cannot help
            except StorageError as e:
                self._storage_failing = True
                self.metrics.storage_errors.inc()
                log.error("%s failed, retrying in %.1f s: %s", what, delay, e)
            except Exception:  # isolated here, so that the flusher lives on
                self._storage_failing = True
                self.metrics.flush_errors.labels(stage="store").inc()
                log.exception("%s failed unexpectedly, retrying in %.1f s", what, delay)
            if self._stop.wait(delay):
                raise BatchAbandoned(what)
            delay = min(delay * 2, RETRY_MAX_S)

    def _store(self, items: list[Pending]) -> list[Reading]:
        """Store `items`; the new readings. A message the database refuses is dropped, counted.

        Such a message passed validation yet cannot be stored (a constraint the protocol does
        not know): retried, its batch would stall ingestion for good. Halving the batch until
        the message is alone costs a few transactions, and only when it happens.
        """
        if not items:
            return []
        try:
            return self._retrying(
                f"storing a batch of {len(items)}", lambda: self._commit(self._batch(items))
            )
        except UnstorableError as e:
            if len(items) > 1:
                half = len(items) // 2
                return self._store(items[:half]) + self._store(items[half:])
            message = items[0].message
            self.metrics.rejected.labels(reason=UNSTORABLE).inc()
            log.error(
                "dropped message %s/%d: the database refuses it: %s",
                message.device_id,
                message.seq,
                e,
            )
            return []

    def _flush_loop(self) -> None:
        while not (self._stop.is_set() and not self._queue):
            items = self._collect()
            if not items:
                continue
            try:
                self._flush(items)
            except BatchAbandoned as e:
                log.warning(
                    "stopped while %s: %d messages left unacknowledged for redelivery",
                    e,
                    len(items) + len(self._queue),
                )
                return
            except Exception:  # the last guard: the flusher must outlive anything
                # Storing is retried inside, so this came after it: what is not acknowledged
                # yet comes again when the broker redelivers it (then a duplicate).
                self.metrics.flush_errors.labels(stage="flush").inc()
                log.exception("flushing a batch of %d failed; going on", len(items))
            finally:
                self._settled_total += len(items)

    def _flush(self, items: list[Pending]) -> None:
        """Store `items`, acknowledge them, republish the new readings."""
        started = time.monotonic()
        with self._tracer.start_as_current_span("ingest batch") as span:
            span.set_attribute("messages", len(items))
            new = self._store(self._from_known_devices(items))
            span.set_attribute("new_readings", len(new))
        # Every message of the batch is now stored, a duplicate, or dropped and counted. From
        # here nothing is retried: acknowledging a packet id twice could acknowledge a newer
        # message that reuses it, before it is stored.
        for pending in items:
            self._isolated("acknowledge", partial(self._client.ack, pending.mid, pending.qos))
        for reading in new:
            self._isolated("republish", partial(self._republish, reading))
        now = time.monotonic()
        self.metrics.batch_seconds.observe(now - started)
        self.metrics.lag_seconds.set(now - min(p.received for p in items))
        self.metrics.queue_depth.set(len(self._queue))

    def _republish(self, reading: Reading) -> None:
        self._client.publish(FLEET_READINGS_TOPIC, encode(reading), qos=1)

    def _isolated(self, stage: str, call: Callable[[], object]) -> None:
        """`call()`; an error is counted and logged, and the batch goes on without it."""
        try:
            call()
        except Exception:  # one message's failure must not end the flusher
            self.metrics.flush_errors.labels(stage=stage).inc()
            log.exception("%s failed; going on", stage)
