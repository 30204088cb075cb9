"""``roadsign-agent run``: everything a device runs, built from its one profile.

The profile (file plus ``ROADSIGN_AGENT__*`` overrides) is loaded once in ``main()`` and passed
here; this wires the model bundle, the OCR engine, the frame source, the sink (outbox plus MQTT
link, or JSON lines) and the health monitor, runs until SIGTERM/SIGINT or the end of a recorded
source, then flushes: pending tracks are reported, the outbox drains as far as the broker allows,
and the offline status goes out before exit.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from edge_agent.agent import (
    Agent,
    JsonLinesSink,
    OutboxSink,
    Sink,
    agent_metrics,
    open_output,
)
from edge_agent.api import LocalApi
from edge_agent.exceptions import AgentError
from edge_agent.health import HealthMonitor
from edge_agent.metrics import render
from edge_agent.mqtt_link import LinkSettings, MqttLink
from edge_agent.ocr import create_ocr
from edge_agent.ota.client import basic_authorization
from edge_agent.ota.smoke import slot_reader
from edge_agent.ota.updater import Updater, boot_model
from edge_agent.outbox import Outbox
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import SignReader
from edge_agent.service_notify import ServiceNotifier
from edge_agent.sources import FrameGrabber, create_source
from fleet_protocol.codec import decode_device_message, encode
from fleet_protocol.exceptions import ProtocolError
from fleet_protocol.messages import (
    DeviceState,
    ModelRef,
    OtaCommand,
    StatusMessage,
    StatusReason,
)
from fleet_protocol.topics import validate_device_id

log = logging.getLogger(__name__)


def resolve_device_id(profile: DeviceProfile, hostname: str | None = None) -> str:
    """The profile's device id, else the host name made into a valid one.

    Characters a device id cannot hold become ``-``, leading and trailing separators go, and
    the rest is cut to 64 characters (an empty result is ``device``).
    """
    if profile.identity.device_id:
        return profile.identity.device_id
    raw = hostname or socket.gethostname()
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", raw).strip("-._")[:64] or "device"
    return validate_device_id(cleaned if cleaned[0].isalnum() else f"d{cleaned}"[:64])


def _password(profile: DeviceProfile) -> str | None:
    path = profile.broker.password_file
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise AgentError(f"cannot read broker.password_file {path}: {e}") from e


def repository_authorization(profile: DeviceProfile, device_id: str) -> str | None:
    """How the device proves itself to the TUF repository: its broker user and password."""
    password = _password(profile)
    if password is None:
        return None
    return basic_authorization(profile.broker.username or device_id, password)


class ServerMessages:
    """Hands each server message to the component that acts on it.

    The MQTT link starts before the OTA updater exists, so the updater is attached here once it
    does; an OTA command that arrives before is only logged (the updater checks at start).
    """

    def __init__(self) -> None:
        self.ota: Callable[[OtaCommand], None] | None = None

    def __call__(self, topic: str, payload: bytes) -> None:
        """Decode and dispatch one message from the link."""
        try:
            where, message = decode_device_message(topic, payload)
        except ProtocolError as e:
            log.warning("dropped a malformed server message on %s: %s (%s)", topic, e, e.reason)
            return
        log.info("server message %s seq %d", where.kind.value, message.seq)
        if isinstance(message, OtaCommand):
            if self.ota is None:
                log.info("OTA command %s: OTA is not running on this device", message.command_id)
            else:
                self.ota(message)
        # Desired configs are acted on by their own component (a later issue).


def profile_reader(profile: DeviceProfile, *, threads: int) -> SignReader:
    """The sign reader of the profile's detector.model_dir, on `threads` inference threads.

    The frame loop, the local API and an OTA slot's smoke test all build theirs with
    `slot_reader`, so `/predict` runs the very artifact (bundle, backend, format, providers)
    that reads the camera.
    """
    return slot_reader(profile, profile.detector.model_dir, threads=threads)


def build_sink(
    profile: DeviceProfile,
    device_id: str,
    agent_version: str,
    model: ModelRef,
    *,
    on_message: Callable[[str, bytes], None] | None = None,
) -> tuple[Sink, Outbox | None]:
    """The sink the profile asks for, started."""
    reporting = profile.reporting
    if reporting.sink in {"stdout", "file"}:
        stream, owned = open_output(reporting.output_file if reporting.sink == "file" else None)
        return JsonLinesSink(stream, device_id, owns_stream=owned), None
    outbox = Outbox(
        profile.outbox.path,
        max_messages=profile.outbox.max_messages,
        max_bytes=int(profile.outbox.max_mb * 2**20),
    )

    def status(reason: StatusReason) -> bytes:
        state = DeviceState.ONLINE if reason == "connected" else DeviceState.OFFLINE
        return encode(
            StatusMessage(
                device_id=device_id,
                seq=outbox.next_seq(),
                timestamp=datetime.now(UTC),
                state=state,
                reason=reason,
                agent_version=agent_version,
                profile=profile.profile,
                model=model,
            )
        )

    broker, tls = profile.broker, profile.broker.tls
    link = MqttLink(
        LinkSettings(
            url=broker.url,
            device_id=device_id,
            username=broker.username or device_id,
            password=_password(profile),
            ca_file=tls.ca_file,
            cert_file=tls.cert_file,
            key_file=tls.key_file,
            keepalive_s=broker.keepalive_s,
        ),
        outbox,
        status,
        on_message=on_message or ServerMessages(),
    )
    link.start()
    return OutboxSink(outbox, link, device_id), outbox


def run_agent(
    profile: DeviceProfile,
    *,
    agent_version: str,
    max_frames: int | None = None,
    stop: threading.Event | None = None,
) -> dict[str, object]:
    """Run the device pipeline; returns what it did.

    SIGTERM and SIGINT stop it cleanly from the start: one that comes while the model loads
    still ends in a flushed outbox and the offline status, not a killed process.
    """
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        return _run_agent(profile, agent_version=agent_version, max_frames=max_frames, stop=stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_agent(
    profile: DeviceProfile,
    *,
    agent_version: str,
    max_frames: int | None,
    stop: threading.Event,
) -> dict[str, object]:
    device_id = resolve_device_id(profile)
    boot = boot_model(profile)
    log.info("model: %s (%s)", boot.bundle_dir, boot.reason)
    reader = slot_reader(profile, boot.bundle_dir, threads=profile.detector.threads)
    metadata = reader.detector.metadata
    wanted = profile.detector.input_size
    if wanted is not None and wanted != metadata.input_size:
        raise AgentError(
            f"detector.input_size is {wanted} but the model in {boot.bundle_dir} "
            f"takes {metadata.input_size} px: set it to {metadata.input_size} or leave it unset"
        )
    ocr = create_ocr(profile.reading.ocr_backend, languages=profile.reading.ocr_languages)
    messages = ServerMessages()
    model = ModelRef(version=metadata.version, sha256=metadata.sha256)
    sink, outbox = build_sink(profile, device_id, agent_version, model, on_message=messages)
    grabber = FrameGrabber(create_source(profile.camera), fps_cap=profile.camera.fps_cap).start()
    disk = profile.outbox.path.parent if outbox else Path.cwd()
    link = sink.link if isinstance(sink, OutboxSink) else None
    agent = Agent(
        profile,
        device_id=device_id,
        agent_version=agent_version,
        reader=reader,
        sink=sink,
        ocr=ocr,
        health=HealthMonitor(disk),
    )
    updater = None
    if profile.ota.enabled:
        running = boot.running
        if running.release == 0:  # the shipped bundle: its own version, not a placeholder
            running = replace(running, version=metadata.version)
        updater = Updater(
            profile,
            device_id=device_id,
            sink=sink,
            running=running,
            model=model,
            swap=agent.use_reader,
            health=lambda: agent.last_health,
            boot=boot,
            shadow=agent.use_shadow,
            authorization=repository_authorization(profile, device_id),
        ).start()
        messages.ota = updater.nudge
    api = None
    if profile.api.enabled:

        def running_bundle() -> Path:
            # what the frame loop runs now: the updater's bundle after an update or rollback
            return updater.bundle_dir if updater else boot.bundle_dir

        def health() -> dict[str, object]:
            report = agent.last_health
            return {
                "device_id": device_id,
                "frames": agent.frames_total,
                "readings": agent.readings_sent,
                "camera_state": grabber.source.state.value,
                "outbox_depth": outbox.depth if outbox else 0,
                "broker_connected": link.connected if link else None,
                "last_report": json.loads(encode(report)) if report else None,
            }

        api = LocalApi(
            profile.api,
            reader=lambda: slot_reader(profile, running_bundle(), threads=1),
            reader_key=running_bundle,
            health=health,
            metrics=lambda: render(
                agent_metrics(agent, outbox=outbox, link=link, frames_dropped=grabber.dropped)
            ),
        ).start()
    notifier = ServiceNotifier.from_environment()
    notifier.ready()
    try:
        frames = agent.run(
            grabber, stop, outbox=outbox, max_frames=max_frames, heartbeat=notifier.watchdog
        )
    finally:
        notifier.stopping()
        if updater is not None:
            updater.stop()
        agent.use_shadow(None)
        if api is not None:
            api.stop()
        grabber.stop()
        ocr.close()
        sink.close()
    return {
        "device_id": device_id,
        "frames": frames,
        "readings": agent.readings_sent,
        "frames_dropped": grabber.dropped,
    }


SinkChoice = Literal["mqtt", "stdout", "file"]


def apply_overrides(
    profile: DeviceProfile, *, source: str | None, sink: SinkChoice | None, output: Path | None
) -> DeviceProfile:
    """The profile with command-line overrides, validated again as a whole."""
    data = profile.model_dump(mode="json")
    if source is not None:
        data["camera"] = {**data["camera"], "source": source, "kind": "auto"}
    if sink is not None:
        data["reporting"] = {**data["reporting"], "sink": sink}
    if output is not None:
        data["reporting"] = {**data["reporting"], "output_file": str(output)}
    return DeviceProfile.model_validate(data)
