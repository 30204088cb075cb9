"""The agent's main loop: frames in, one protocol reading per sign out, health on a timer.

Each frame is read (detect, classify), readings are tracked, and when a track becomes due its
reading is checked once more by OCR on its best view (text plates get their text; a speed
number OCR reads differently from the classifier marks the reading as disagreeing and lowers its
confidence), turned into a `fleet_protocol` Reading and handed to the sink. A reading is stamped
with the time its best view's frame was seen, not when it became due: a sign is often reported
only when it leaves the view, half a second or more after it was passed. Sinks put messages
in the outbox for the broker, or write JSON lines where there is no broker.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

import cv2
import numpy as np

from edge_agent.health import HealthMonitor
from edge_agent.metrics import Metric
from edge_agent.mqtt_link import MqttLink
from edge_agent.ocr import OcrEngine, prepare_for_ocr
from edge_agent.ota.shadow import TrackedBox
from edge_agent.ota.shadow_runner import ShadowRunner
from edge_agent.outbox import Outbox
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import DISAGREEMENT_PENALTY, SignReader, SignReading
from edge_agent.sources import Frame, FrameGrabber
from edge_agent.tracking import SignTracker, TrackedReading
from fleet_protocol.codec import encode
from fleet_protocol.messages import (
    CameraState,
    Envelope,
    GeoPoint,
    HealthReport,
    ModelRef,
    PipelineStage,
    Reading,
)
from fleet_protocol.taxonomy import SignType
from fleet_protocol.topics import KIND_SPECS, MessageKind, device_topic

log = logging.getLogger(__name__)

PLAUSIBLE_SPEEDS = {"km/h": set(range(5, 131, 5)), "mph": set(range(5, 86, 5))}
_OCR_CROP_PX = 128


class Sink(Protocol):
    """Where the agent's messages go."""

    def next_seq(self) -> int:
        """The device's next sequence number."""
        ...

    def emit(self, kind: MessageKind, message: Envelope) -> None:
        """Send (or store for sending) one message."""
        ...

    def close(self) -> None:
        """Flush and release."""
        ...


class OutboxSink:
    """Messages go to the durable outbox; the MQTT link drains it."""

    def __init__(self, outbox: Outbox, link: MqttLink | None, device_id: str) -> None:
        self.outbox, self.link, self.device_id = outbox, link, device_id

    def next_seq(self) -> int:
        """From the outbox's persisted counter."""
        return self.outbox.next_seq()

    def emit(self, kind: MessageKind, message: Envelope) -> None:
        """Store, then wake the link."""
        spec = KIND_SPECS[kind]
        self.outbox.put(
            device_topic(self.device_id, kind), encode(message), qos=spec.qos, retain=spec.retain
        )
        if self.link is not None:
            self.link.notify()

    def close(self) -> None:
        """Flush to the broker (bounded wait), say offline, close the outbox."""
        if self.link is not None:
            self.link.stop(timeout=10)
        self.outbox.close()


class JsonLinesSink:
    """One JSON object per line: ``{"topic": ..., "message": {...}}``; no broker needed."""

    def __init__(self, stream: IO[str], device_id: str, *, owns_stream: bool = False) -> None:
        self._stream, self._owns = stream, owns_stream
        self.device_id = device_id
        self._seq = 0
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        """A counter of this run."""
        with self._lock:
            self._seq += 1
            return self._seq - 1

    def emit(self, kind: MessageKind, message: Envelope) -> None:
        """Write the message as one line."""
        line = json.dumps(
            {"topic": device_topic(self.device_id, kind), "message": json.loads(encode(message))}
        )
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        """Close the file if the sink opened it."""
        if self._owns:
            self._stream.close()


def sign_view(
    image: np.ndarray, box: tuple[float, float, float, float], max_px: int = _OCR_CROP_PX
) -> np.ndarray:
    """The sign's own pixels, shrunk to at most `max_px` on the longer side."""
    h, w = image.shape[:2]
    x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
    x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    region = image[y1:y2, x1:x2]
    if region.size == 0:
        return np.zeros((1, 1, 3), np.uint8)
    scale = min(1.0, max_px / max(region.shape[:2]))
    if scale < 1:
        region = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(region)


def check_with_ocr(
    reading: SignReading, view: np.ndarray, ocr: OcrEngine
) -> tuple[SignReading, str | None]:
    """The reading after OCR's second opinion, and the text OCR read (if any is kept)."""
    if reading.sign_type is SignType.SUPPLEMENTARY_TEXT:
        text = ocr.read(prepare_for_ocr(view, inner=0.06)).text.strip()
        return reading, (text[:256] or None)
    if reading.value is None or reading.unit is None:
        return reading, None
    digits = re.sub(r"\D", "", ocr.read(prepare_for_ocr(view, inner=0.2), digits_only=True).text)
    read = int(digits) if digits else None
    if read is None or read not in PLAUSIBLE_SPEEDS[reading.unit]:
        return reading, None  # OCR has no opinion worth weighing
    if read != reading.value:
        return replace(
            reading, sources_disagree=True, confidence=reading.confidence * DISAGREEMENT_PENALTY
        ), None
    return reading, None


class Agent:
    """One device's pipeline."""

    def __init__(
        self,
        profile: DeviceProfile,
        *,
        device_id: str,
        agent_version: str,
        reader: SignReader,
        sink: Sink,
        ocr: OcrEngine | None,
        health: HealthMonitor,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.profile = profile
        self.device_id = device_id
        self.agent_version = agent_version
        self.reader = reader
        # The OTA updater swaps the reader from its own thread; the loop takes it once a frame.
        self._reader_lock = threading.Lock()
        self._shadow: ShadowRunner | None = None
        self.sink = sink
        self.ocr = ocr
        self.health = health
        self.clock = clock
        self.tracker = SignTracker(
            confirm_frames=profile.reading.confirm_frames,
            min_frames=min(2, profile.reading.confirm_frames),
            min_confidence=profile.reading.min_confidence,
            min_report_px=profile.reading.min_report_px,
        )
        metadata = reader.detector.metadata
        self.model = ModelRef(version=metadata.version, sha256=metadata.sha256)
        self.readings_sent = 0
        self.frames_total = 0
        self.last_health: HealthReport | None = None
        location = profile.location
        self._location = GeoPoint(lat=location.lat, lon=location.lon) if location else None

    def use_reader(self, reader: SignReader, model: ModelRef) -> None:
        """Run `reader` (of `model`) from the next frame on, without stopping the loop."""
        with self._reader_lock:
            self.reader = reader
            self.model = model

    def use_shadow(self, runner: ShadowRunner | None) -> None:
        """Let `runner` (the previous model, during probation) read beside the loop; None:
        no shadow reading. A runner replaced is stopped."""
        with self._reader_lock:
            old, self._shadow = self._shadow, runner
        if old is not None and old is not runner:
            old.stop()

    @property
    def shadow(self) -> ShadowRunner | None:
        """The shadow reading in progress, if any."""
        return self._shadow

    def process(self, frame: Frame) -> list[Reading]:
        """Read one frame; return the protocol readings it made due (already emitted)."""
        with self._reader_lock:
            reader, shadow = self.reader, self._shadow
        started = time.perf_counter()
        detections = reader.detect(
            frame.image,
            confidence=self.profile.detector.confidence_threshold,
            iou_threshold=self.profile.detector.iou_threshold,
            phase=self.frames_total,
        )
        detected = time.perf_counter()
        # Only detections worth reading are classified (see SignTracker.to_read); the rest
        # keep their tracks moving.
        wanted = self.tracker.to_read([(d.box, d.category) for d in detections])
        readings = reader.read_detections(frame.image, detections, skip=[not w for w in wanted])
        classified = time.perf_counter()
        viewed = [
            replace(r, view=sign_view(frame.image, r.box)) if read else r
            for r, read in zip(readings, wanted, strict=True)
        ]
        due = self.tracker.update(viewed, frame.captured_at)
        if shadow is not None:
            tracked = zip(self.tracker.frame_track_ids, readings, strict=True)
            shadow.observe(frame.image, [TrackedBox(t, r) for t, r in tracked])
        ocr_started = time.perf_counter()
        sent = [self._emit(item) for item in due]
        finished = time.perf_counter()
        self.health.frame(
            {
                PipelineStage.DECODE: frame.decode_seconds,
                PipelineStage.DETECT: detected - started,
                PipelineStage.CLASSIFY: classified - detected,
                PipelineStage.OCR: finished - ocr_started,
                PipelineStage.TOTAL: frame.decode_seconds + finished - started,
            }
        )
        self.frames_total += 1
        return [reading for reading in sent if reading is not None]

    def _emit(self, tracked: TrackedReading) -> Reading | None:
        reading = tracked.reading
        view = reading.view
        text = None
        if self.ocr is not None and view is not None:
            reading, text = check_with_ocr(reading, view, self.ocr)
        if reading.confidence < self.profile.reading.min_confidence:
            self.tracker.reject(tracked)  # a surer view of the sign may still come
            return None
        crop = None
        if self.profile.reporting.include_crops and view is not None:
            small = sign_view(
                view, (0, 0, view.shape[1], view.shape[0]), self.profile.reporting.crop_max_px
            )
            ok, jpeg = cv2.imencode(
                ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80]
            )
            crop = jpeg.tobytes() if ok else None
        message = Reading(
            device_id=self.device_id,
            seq=self.sink.next_seq(),
            timestamp=datetime.fromtimestamp(tracked.seen_at, UTC),
            sign_type=reading.sign_type,
            gtsrb_class_id=reading.gtsrb_class_id,
            value=reading.value,
            unit=reading.unit,
            text=text,
            confidence=min(max(reading.confidence, 0.0), 1.0),
            sources_disagree=reading.sources_disagree,
            bbox=reading.box,
            track_id=tracked.track_id,
            frames_seen=tracked.frames_seen,
            model=self.model,
            location=self._location,
            crop_jpeg=crop,
        )
        self.sink.emit(MessageKind.READINGS, message)
        self.readings_sent += 1
        return message

    def health_report(
        self, *, camera: CameraState, frames_dropped: int, outbox: Outbox | None
    ) -> HealthReport:
        """The health message of the interval that ends now."""
        snap = self.health.snapshot()
        self.last_health = HealthReport(
            device_id=self.device_id,
            seq=self.sink.next_seq(),
            timestamp=self.clock(),
            agent_version=self.agent_version,
            model=self.model,
            uptime_s=snap.uptime_s,
            fps=snap.fps,
            frames_dropped=frames_dropped,
            stage_latency_ms=snap.stage_latency_ms,
            cpu_percent=snap.cpu_percent,
            rss_mb=snap.rss_mb,
            temperature_c=snap.temperature_c,
            disk_free_mb=snap.disk_free_mb,
            camera_state=camera,
            outbox_depth=outbox.depth if outbox else 0,
            outbox_dropped=outbox.dropped if outbox else 0,
            shadow=shadow.report() if (shadow := self._shadow) is not None else None,
        )
        return self.last_health

    def run(
        self,
        grabber: FrameGrabber,
        stop: threading.Event,
        *,
        outbox: Outbox | None = None,
        max_frames: int | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> int:
        """Process frames until `stop`, the end of a recorded source, or `max_frames`.

        `heartbeat` is called on every turn of the loop (at least every half second, frame or
        not: a camera that is reconnecting does not stop it), which is what systemd's watchdog
        is fed from.
        """
        interval = self.profile.reporting.health_interval_s
        next_health = time.monotonic() + interval
        frames = 0
        while not stop.is_set() and (max_frames is None or frames < max_frames):
            if heartbeat is not None:
                heartbeat()
            frame = grabber.get(timeout=0.5)
            if frame is None:
                if grabber.finished:
                    break
            else:
                self.process(frame)
                frames += 1
            if time.monotonic() >= next_health:
                next_health += interval
                self.sink.emit(
                    MessageKind.HEALTH,
                    self.health_report(
                        camera=grabber.source.state, frames_dropped=grabber.dropped, outbox=outbox
                    ),
                )
        for tracked in self.tracker.flush():
            self._emit(tracked)
        self.sink.emit(
            MessageKind.HEALTH,
            self.health_report(
                camera=grabber.source.state, frames_dropped=grabber.dropped, outbox=outbox
            ),
        )
        return frames


def agent_metrics(
    agent: Agent, *, outbox: Outbox | None, frames_dropped: int, link: MqttLink | None
) -> list[Metric]:
    """The agent's Prometheus metrics."""
    device = {"device_id": agent.device_id}
    metrics = [
        Metric(
            "roadsign_frames_total", "counter", "Frames processed.", [(device, agent.frames_total)]
        ),
        Metric(
            "roadsign_readings_total",
            "counter",
            "Readings sent (one per sign).",
            [(device, agent.readings_sent)],
        ),
        Metric(
            "roadsign_frames_dropped_total",
            "counter",
            "Frames dropped under load.",
            [(device, frames_dropped)],
        ),
        Metric(
            "roadsign_outbox_depth",
            "gauge",
            "Messages waiting in the outbox.",
            [(device, outbox.depth if outbox else 0)],
        ),
        Metric(
            "roadsign_outbox_dropped_total",
            "counter",
            "Messages dropped from a full outbox.",
            [(device, outbox.dropped if outbox else 0)],
        ),
    ]
    if link is not None:
        metrics.append(
            Metric(
                "roadsign_broker_connected",
                "gauge",
                "1 while connected.",
                [(device, 1.0 if link.connected else 0.0)],
            )
        )
    shadow = agent.shadow
    if shadow is not None:
        metrics.append(
            Metric(
                "roadsign_shadow_frames_dropped_total",
                "counter",
                "Sampled frames the previous model skipped during probation (it was busy).",
                [(device, shadow.frames_dropped)],
            )
        )
    health = agent.last_health
    if health is not None:
        metrics.append(
            Metric(
                "roadsign_fps", "gauge", "Frames per second, last interval.", [(device, health.fps)]
            )
        )
        metrics.append(
            Metric(
                "roadsign_rss_megabytes",
                "gauge",
                "Resident memory, MiB.",
                [(device, health.rss_mb)],
            )
        )
        metrics.append(
            Metric(
                "roadsign_stage_latency_ms",
                "gauge",
                "Stage latency percentiles, last interval.",
                [
                    ({**device, "stage": stage.value, "quantile": q}, value)
                    for stage, stats in health.stage_latency_ms.items()
                    for q, value in (("0.5", stats.p50_ms), ("0.95", stats.p95_ms))
                ],
            )
        )
    return metrics


def open_output(path: Path | None) -> tuple[IO[str], bool]:
    """The JSON-lines stream: the file (appended, created) or stdout."""
    import sys

    if path is None:
        return sys.stdout, False
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8"), True
