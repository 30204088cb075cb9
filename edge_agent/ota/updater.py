"""The updater: follows the device's signed assignment in a thread of its own.

On start, every ``ota.check_interval_s`` and on each OtaCommand (a nudge, with no authority of
its own) it refreshes the TUF metadata and decides (state.decide) what the signed assignment
asks; an install passes downloading, verified, staged, smoke_testing, active, each reported on
ota/status, and ends with the frame loop's reader swapped for the new one without stopping it.
Probation is watched between checks. A device that cannot refresh keeps the model it verified,
reports failed with the reason, and tries again after a backoff (``ota.retry_initial_s``,
doubling with jitter up to the check interval).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tuf.api.metadata import TargetFile

from edge_agent.agent import Sink
from edge_agent.exceptions import AgentError, OtaError
from edge_agent.ota.client import OtaClient
from edge_agent.ota.probation import ProbationWatch, health_numbers, limits
from edge_agent.ota.shadow_runner import ShadowRunner, ShadowStore
from edge_agent.ota.slots import Slots
from edge_agent.ota.smoke import SmokeResult, slot_reader, smoke_test
from edge_agent.ota.state import (
    Assignment,
    HealthNumbers,
    Nudge,
    Probation,
    RunningModel,
    SlotInfo,
    Verdict,
    assignment_command_id,
    decide,
    probation_command_id,
    retry_delay,
    slot_command_id,
)
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import SignReader
from fleet_protocol.messages import HealthReport, ModelRef, OtaCommand, OtaState, OtaStatus
from fleet_protocol.topics import MessageKind

log = logging.getLogger(__name__)

MODELS_PREFIX = "models/"
SHADOW_FILE = "shadow.json"
"""The probation's shadow numbers, in the state folder."""
ReaderSwap = Callable[[SignReader, ModelRef], None]
ShadowSwitch = Callable[[ShadowRunner | None], None]
"""Where a shadow reading runs (the agent's frame loop); None ends the one running."""


@dataclasses.dataclass(frozen=True)
class BootModel:
    """The bundle the agent starts on and what it is."""

    bundle_dir: Path
    running: RunningModel
    reason: str
    rolled_back: str | None = None
    """Why a probation ended in a rollback at this start (a crash loop), to be reported."""
    rolled_back_from: SlotInfo | None = None
    """The model that rollback left (its version and rollout, for the status)."""


SHIPPED_VERSION = "release-0"
"""The version a running model before any OTA is reported under, until its reader says."""


def boot_model(profile: DeviceProfile, *, clock: Callable[[], float] = time.time) -> BootModel:
    """Which bundle to run at start: the active slot if it verifies, else the previous one,
    else the profile's detector.model_dir ("release 0"). Counts the start against a probation
    in progress first, so a crash loop rolls back before the crashing model loads again."""
    shipped = BootModel(
        profile.detector.model_dir,
        RunningModel(version=SHIPPED_VERSION, release=0, sha256=""),
        "OTA disabled: runs detector.model_dir",
    )
    if not profile.ota.enabled:
        return shipped
    slots = Slots(profile.ota.state_dir)
    verdict = record = None
    try:
        record = slots.count_restart()
        verdict = ProbationWatch(slots, limits(profile.ota), clock=clock).check(None)
    except OtaError as e:
        log.warning("slot record: %s", e)
    model = active_model(profile, slots)
    if verdict is not None and verdict.outcome is Probation.ROLL_BACK:
        failed = (record.slots or {}).get(record.active or "") if record else None
        return dataclasses.replace(model, rolled_back=verdict.reason, rolled_back_from=failed)
    return model


def active_model(profile: DeviceProfile, slots: Slots) -> BootModel:
    """The bundle the slot record says runs now, checked: active, previous, or model_dir."""
    shipped = RunningModel(version=SHIPPED_VERSION, release=0, sha256="")
    choice, record = slots.boot()
    if choice.slot is None or record is None or not record.slots:
        return BootModel(profile.detector.model_dir, shipped, choice.reason)
    info = record.slots.get(choice.slot)
    if info is None:
        return BootModel(profile.detector.model_dir, shipped, choice.reason)
    return BootModel(
        slots.bundle_dir(choice.slot),
        RunningModel(version=info.version, release=info.release, sha256=info.sha256),
        choice.reason,
    )


class Updater:
    """The OTA component of one agent process."""

    def __init__(
        self,
        profile: DeviceProfile,
        *,
        device_id: str,
        sink: Sink,
        running: RunningModel,
        model: ModelRef,
        swap: ReaderSwap,
        health: Callable[[], HealthReport | None] = lambda: None,
        client: OtaClient | None = None,
        smoke: Callable[[Path], SmokeResult] | None = None,
        clock: Callable[[], float] = time.time,
        boot: BootModel | None = None,
        shadow: ShadowSwitch | None = None,
        jitter: Callable[[], float] = random.random,
        authorization: str | None = None,
    ) -> None:
        config = profile.ota
        self.profile = profile
        self.config = config
        self.device_id = device_id
        self.sink = sink
        self.running = running
        self.model = model
        self.swap = swap
        self.health = health
        self.clock = clock
        self.slots = Slots(config.state_dir)
        self.watch = ProbationWatch(self.slots, limits(config), clock=clock)
        self._client = client
        self._smoke = smoke or (lambda bundle: smoke_test(profile, bundle))
        self._commands: queue.Queue[OtaCommand] = queue.Queue(maxsize=16)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probation: tuple[uuid.UUID, str, str | None] | None = None
        self.last_state: OtaState | None = None
        self._boot = boot
        self._shadow = shadow
        self._jitter = jitter
        self._authorization = authorization
        self.refresh_failures = 0
        """Failed refreshes in a row: the next check backs off from them."""
        self.bundle_dir = boot.bundle_dir if boot else profile.detector.model_dir
        """The bundle folder of the model running now."""

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> Updater:
        """Run checks in a daemon thread until `stop()`."""
        self._thread = threading.Thread(target=self._run, name="ota-updater", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the thread after the step in progress."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def nudge(self, command: OtaCommand) -> None:
        """An OtaCommand arrived: check now (a full queue drops it; the next check follows)."""
        try:
            self._commands.put_nowait(command)
        except queue.Full:
            log.warning("OTA command %s dropped: too many waiting", command.command_id)
        self._wake.set()

    def report_boot(self) -> OtaState | None:
        """Report a rollback this start made (a crash loop in probation), if it made one, or
        the activation a killed process switched to and never reported."""
        if self._boot is None or not self._boot.rolled_back:
            return self.report_unreported_activation()
        failed = self._boot.rolled_back_from
        if failed is None:  # a record from before rollouts were kept in it
            return self.report(
                OtaState.ROLLED_BACK, None, self.running.version, None, self._boot.rolled_back
            )
        # Named as the probation's own statuses are: the model rolled back and its rollout.
        return self.report(
            OtaState.ROLLED_BACK,
            probation_command_id(failed.sha256),
            failed.version,
            failed.rollout_id,
            self._boot.rolled_back,
        )

    def report_unreported_activation(self) -> OtaState | None:
        """Report `active` for the slot on probation when the process that switched to it died
        before saying so: the rollout waits for that report (its command and rollout)."""
        record = self.slots.read_record()
        if (
            record is None
            or record.activation_reported
            or record.probation_started is None
            or record.active is None
        ):
            return None
        info = (record.slots or {}).get(record.active)
        if info is None or self.bundle_dir != self.slots.bundle_dir(record.active):
            return None  # the boot does not run the model on probation: nothing to announce
        command_id = slot_command_id(info)
        state = self.report(
            OtaState.ACTIVE,
            command_id,
            info.version,
            info.rollout_id,
            "activated before a restart",
        )
        self.slots.activation_was_reported()
        self._probation = (command_id, info.version, info.rollout_id)
        return state

    def _run(self) -> None:
        self._guarded(self.report_boot)
        self._guarded(self.resume_shadow)
        next_check = 0.0
        while not self._stop.is_set():
            command: OtaCommand | None = None
            with contextlib.suppress(queue.Empty):
                command = self._commands.get_nowait()
            if command is not None or time.monotonic() >= next_check:
                self._guarded(functools.partial(self.check, command))
                next_check = time.monotonic() + self.next_check_in()
            self._guarded(self.watch_probation)
            # A probation needs a look more often than the check interval.
            wait = min(max(0.0, next_check - time.monotonic()), 5.0)
            self._wake.wait(timeout=wait)
            self._wake.clear()

    def next_check_in(self) -> float:
        """Seconds to the next check: the interval, or a backoff after failed refreshes."""
        return retry_delay(
            self.refresh_failures,
            initial_s=self.config.retry_initial_s,
            cap_s=self.config.check_interval_s,
            jitter=self._jitter(),
        )

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except AgentError as e:
            log.error("OTA step failed: %s", e)
        except Exception:  # a bug in one step must not end the updater thread for good
            log.exception("OTA step crashed")

    # -- one check -------------------------------------------------------------------------

    def client(self) -> OtaClient:
        """The TUF client (built on first use from the profile's trusted root)."""
        if self._client is None:
            self._client = OtaClient.from_root_file(
                self.config.trusted_root_file,
                repository_url=self.config.repository_url,
                state_dir=self.config.state_dir,
                timeout_s=self.config.request_timeout_s,
                ca_file=self.config.ca_file,
                authorization=self._authorization,
            )
        return self._client

    def check(self, command: OtaCommand | None = None) -> OtaState | None:
        """Refresh, decide and, when the signed assignment says so, install; the last state."""
        version = command.model_version if command else self.running.version
        command_id = command.command_id if command else None
        rollout = command.rollout_id if command else None
        if command is not None:
            self.report(OtaState.RECEIVED, command_id, version, rollout)
        try:
            client = self.client()
            client.refresh()
            signed = client.assignment(self.device_id)
            # Models are only in the offline-signed top-level role ("what exists"): an
            # assignment naming anything else resolves to nothing, which decide refuses.
            resolved = (
                client.model_info(signed.target)
                if signed and signed.target.startswith(MODELS_PREFIX)
                else None
            )
        except OtaError as e:
            # Cannot refresh: keep the verified model, say why, try again after a backoff.
            self.refresh_failures += 1
            return self.report(OtaState.FAILED, command_id, version, rollout, str(e))
        self.refresh_failures = 0
        if signed is not None:
            command_id = command_id or assignment_command_id(signed)
            version, rollout = signed.version, signed.rollout_id
        record = self.slots.read_record()
        decision = decide(
            device_id=self.device_id,
            running=self.running,
            signed=signed,
            model=resolved[0] if resolved else None,
            nudge=Nudge(command.action, command.model_version, command.target_path)
            if command
            else None,
            max_bytes=int(self.config.max_model_mb * 2**20),
            rejected=record.rejected if record else (),
        )
        log.info("OTA decision: %s (%s)", decision.verdict.value, decision.reason)
        if decision.verdict is Verdict.REFUSE:
            return self.report(OtaState.FAILED, command_id, version, rollout, decision.reason)
        if decision.verdict is Verdict.NOTHING:
            if command is not None and command_id is not None:
                return self.report(OtaState.ACTIVE, command_id, version, rollout, decision.reason)
            return None
        assert signed is not None
        assert resolved is not None
        assert command_id is not None
        return self._install(client, signed, resolved[1], command_id)

    def _install(
        self, client: OtaClient, signed: Assignment, targetinfo: TargetFile, command_id: uuid.UUID
    ) -> OtaState:
        version, rollout = signed.version, signed.rollout_id
        self.report(OtaState.DOWNLOADING, command_id, version, rollout)
        try:
            tar = client.download(targetinfo)
            self.report(OtaState.VERIFIED, command_id, version, rollout)
            slot, bundle = self.slots.stage(tar, max_bytes=targetinfo.length)
        except OtaError as e:
            return self.report(OtaState.FAILED, command_id, version, rollout, str(e))
        tar.unlink(missing_ok=True)
        self.report(OtaState.STAGED, command_id, version, rollout, f"slot {slot}")
        self.report(OtaState.SMOKE_TESTING, command_id, version, rollout)
        result = self._smoke(bundle)
        if not result.passed or result.reader is None:
            self.slots.reject(signed.sha256)
            return self.report(OtaState.FAILED, command_id, version, rollout, result.detail)
        detector = result.reader.detector.metadata
        baseline = health_numbers(self.health())
        self.slots.activate(
            slot,
            SlotInfo(
                version=version,
                release=signed.release,
                sha256=signed.sha256,
                detector_sha256=detector.sha256,
                rollout_id=rollout,
                command_id=str(command_id),
            ),
            now=self.clock(),
            baseline=baseline,
        )
        previous_bundle = self.bundle_dir
        self._use(
            result.reader,
            RunningModel(version=version, release=signed.release, sha256=signed.sha256),
            bundle,
        )
        self._probation = (command_id, version, rollout)
        self.start_shadow(previous_bundle, self._shadow_store())
        state = self.report(OtaState.ACTIVE, command_id, version, rollout, result.detail)
        self.slots.activation_was_reported()
        return state

    def _use(self, reader: SignReader, running: RunningModel, bundle_dir: Path) -> None:
        self.bundle_dir = bundle_dir
        metadata = reader.detector.metadata
        self.model = ModelRef(version=metadata.version, sha256=metadata.sha256)
        self.running = running
        self.swap(reader, self.model)

    # -- probation -------------------------------------------------------------------------

    def watch_probation(self, now: HealthNumbers | None = None) -> OtaState | None:
        """Judge the probation in progress; a rollback swaps the previous model back in."""
        if now is None:
            now = health_numbers(self.health(), self.model)
        record = self.slots.read_record()
        verdict = self.watch.check(now)
        if verdict is None or verdict.outcome is Probation.WATCHING:
            return None
        # After a restart the probation's command is not known here: the record's rollout is.
        on_probation = (record.slots or {}).get(record.active or "") if record else None
        command_id, version, rollout = self._probation or (
            slot_command_id(on_probation)
            if on_probation
            else probation_command_id(self.running.sha256),
            self.running.version,
            on_probation.rollout_id if on_probation else None,
        )
        self._probation = None
        self.stop_shadow()
        if verdict.outcome is Probation.PASSED:
            return self.report(OtaState.PROBATION_PASSED, command_id, version, rollout)
        boot = boot_model(self.profile.model_copy(), clock=self.clock)
        try:
            reader = slot_reader(
                self.profile, boot.bundle_dir, threads=self.profile.detector.threads
            )
        except AgentError as e:
            detail = f"{verdict.reason}; the previous model does not load either: {e}"
            return self.report(OtaState.ROLLED_BACK, command_id, version, rollout, detail)
        self._use(reader, boot.running, boot.bundle_dir)
        return self.report(OtaState.ROLLED_BACK, command_id, version, rollout, verdict.reason)

    # -- shadow reading --------------------------------------------------------------------

    def _shadow_store(self) -> ShadowStore | None:
        """Where the shadow numbers of the probation in progress are kept across restarts."""
        record = self.slots.read_record()
        if record is None or record.active is None or record.probation_started is None:
            return None
        info = (record.slots or {}).get(record.active)
        if info is None:
            return None
        return ShadowStore(
            self.config.state_dir / SHADOW_FILE, f"{info.sha256}@{record.probation_started!r}"
        )

    def start_shadow(
        self, previous_bundle: Path, store: ShadowStore | None = None
    ) -> ShadowRunner | None:
        """Let the model in `previous_bundle` read sampled frames beside the new one, its
        numbers kept in `store` (and resumed from it)."""
        if self._shadow is None or not self.config.shadow_enabled:
            return None
        try:
            reader = slot_reader(self.profile, previous_bundle, threads=1)
        except AgentError as e:
            log.warning("no shadow reading: the previous model does not load: %s", e)
            return None
        metadata = reader.detector.metadata
        runner = ShadowRunner(
            reader,
            ModelRef(version=metadata.version, sha256=metadata.sha256),
            every_n_frames=self.config.shadow_every_n_frames,
            queue_frames=self.config.shadow_queue_frames,
            confidence=self.profile.detector.confidence_threshold,
            iou_threshold=self.profile.detector.iou_threshold,
            store=store,
        ).start()
        self._shadow(runner)
        return runner

    def stop_shadow(self) -> None:
        """End the shadow reading (the probation it served is over)."""
        if self._shadow is not None:
            self._shadow(None)

    def resume_shadow(self) -> ShadowRunner | None:
        """After a restart during probation: the previous slot reads beside the active one."""
        record = self.slots.read_record()
        if record is None or record.probation_started is None or record.active is None:
            return None
        if self.bundle_dir != self.slots.bundle_dir(record.active):
            return None  # the boot did not run the model on probation
        previous = (
            self.slots.bundle_dir(record.previous)
            if record.previous is not None
            else self.profile.detector.model_dir
        )
        return self.start_shadow(previous, self._shadow_store())

    # -- status ----------------------------------------------------------------------------

    def report(
        self,
        state: OtaState,
        command_id: uuid.UUID | None,
        version: str,
        rollout_id: str | None,
        detail: str = "",
    ) -> OtaState:
        """Send one OtaStatus (through the sink: the outbox, when there is MQTT)."""
        if state is OtaState.FAILED:
            log.warning("OTA %s failed: %s", version, detail)
        if command_id is None:
            command_id = uuid.uuid5(uuid.NAMESPACE_URL, f"roadsign:check:{self.device_id}")
        self.sink.emit(
            MessageKind.OTA_STATUS,
            OtaStatus(
                device_id=self.device_id,
                seq=self.sink.next_seq(),
                timestamp=datetime.now(UTC),
                command_id=command_id,
                state=state,
                model_version=version,
                rollout_id=rollout_id,
                detail=detail[:1000],
                running_model=self.model,
            ),
        )
        self.last_state = state
        return state
