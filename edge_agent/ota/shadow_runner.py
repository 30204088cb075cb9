"""The shadow reading's thread: the previous model reads sampled frames beside the frame loop.

The frame loop hands every frame's tracked readings to `observe` (a few dict updates under a
lock) and every ``ota.shadow_every_n_frames``-th frame into a bounded queue without waiting: when
the shadow thread is still reading an earlier frame the frame is dropped and counted, so the
previous model never slows the loop down, it only compares fewer frames. The comparison itself
is shadow.ShadowTally (pure).

The numbers are cumulative since the install: a ShadowStore keeps them in the state folder
(written atomically every few seconds and when the runner stops), and the runner of a restarted
agent starts from what the store holds for the same install.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.exceptions import AgentError
from edge_agent.ota.shadow import ShadowTally, TrackedBox
from edge_agent.ota.slots import write_atomically
from edge_agent.ota.state import ShadowNumbers
from edge_agent.reading.signs import SignReader
from fleet_protocol.messages import ModelRef, ShadowReport

log = logging.getLogger(__name__)

_Job = tuple[np.ndarray, list[TrackedBox]]
_NONE = ShadowNumbers(0, 0, 0)


@dataclass(frozen=True)
class ShadowStore:
    """One install's shadow numbers in `path`, kept across restarts of its probation."""

    path: Path
    install: str
    """Which install the numbers are of (its target and switch time): another one's are not
    resumed, so a new install starts from 0."""

    def load(self) -> ShadowNumbers:
        """The numbers kept for this install; 0 when none are (or they cannot be read)."""
        try:
            body = json.loads(self.path.read_bytes())
            if body.get("install") != self.install:
                return _NONE
            return ShadowNumbers(
                int(body["frames_compared"]),
                int(body["tracks_compared"]),
                int(body["tracks_agreeing"]),
            )
        except FileNotFoundError:
            return _NONE
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("shadow numbers in %s not resumed: %s", self.path, e)
            return _NONE

    def save(self, numbers: ShadowNumbers) -> None:
        """Replace the kept numbers atomically (a failure is logged: they are only numbers)."""
        body = {
            "install": self.install,
            "frames_compared": numbers.frames_compared,
            "tracks_compared": numbers.tracks_compared,
            "tracks_agreeing": numbers.tracks_agreeing,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps(body).encode() + b"\n")
        except OSError as e:
            log.warning("shadow numbers not saved to %s: %s", self.path, e)


class ShadowRunner:
    """The previous model reading a sample of frames in a daemon thread of its own."""

    def __init__(
        self,
        reader: SignReader,
        previous: ModelRef,
        *,
        every_n_frames: int,
        queue_frames: int = 2,
        confidence: float = 0.25,
        iou_threshold: float = 0.45,
        store: ShadowStore | None = None,
        save_every_s: float = 5.0,
    ) -> None:
        self.reader = reader
        self.previous = previous
        self.every_n_frames = every_n_frames
        self.confidence = confidence
        self.iou_threshold = iou_threshold
        self.frames_dropped = 0
        """Sampled frames not compared because the shadow thread was busy."""
        self.frames_failed = 0
        """Sampled frames the previous model failed to read (logged)."""
        self._tally = ShadowTally()
        self._lock = threading.Lock()
        self._frames = 0
        self._pending = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_frames)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ota-shadow", daemon=True)
        self._store = store
        self._save_every_s = save_every_s
        self._saved_at = time.monotonic()
        self._save_lock = threading.Lock()
        self._carried = store.load() if store is not None else _NONE
        """What the runners of this install before a restart compared."""

    def start(self) -> ShadowRunner:
        """Start the shadow thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        """End the thread after the frame it reads (if any)."""
        self._stopping.set()
        # A full queue: the thread is reading a frame, and sees _stopping after it.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=timeout)
        self.save()

    def save(self) -> None:
        """Keep the cumulative numbers in the store, if there is one."""
        if self._store is None:
            return
        with self._save_lock:
            self._store.save(self.numbers())
            self._saved_at = time.monotonic()

    def observe(self, image: np.ndarray, tracked: Sequence[TrackedBox]) -> bool:
        """One frame of the loop, on the loop's thread: never waits. Whether it was queued."""
        with self._lock:
            self._tally.new_frame(tracked)
            self._frames += 1
            sampled = self._frames % self.every_n_frames == 0
        if not sampled or self._stopping.is_set():
            return False
        with self._lock:
            self._pending += 1  # before the put: the thread may be done with it at once
        try:
            self._queue.put_nowait((image, list(tracked)))
        except queue.Full:
            with self._lock:
                self._pending -= 1
                self.frames_dropped += 1
            return False
        return True

    def _run(self) -> None:
        while not self._stopping.is_set():
            job = self._queue.get()
            if job is None or self._stopping.is_set():
                return
            image, tracked = job
            try:
                readings = self.reader.read(
                    image, confidence=self.confidence, iou_threshold=self.iou_threshold
                )
            except AgentError as e:
                log.warning("shadow reading of %s failed: %s", self.previous.version, e)
                with self._lock:
                    self.frames_failed += 1
                    self._pending -= 1
                continue
            with self._lock:
                self._tally.shadow_frame(tracked, readings)
                self._pending -= 1
            if time.monotonic() - self._saved_at >= self._save_every_s:
                self.save()

    @property
    def pending(self) -> int:
        """Sampled frames queued or being read, not compared yet."""
        with self._lock:
            return self._pending

    def numbers(self) -> ShadowNumbers:
        """The comparison since the install: this runner's and those before a restart."""
        with self._lock:
            mine = self._tally.numbers()
        carried = self._carried
        return ShadowNumbers(
            carried.frames_compared + mine.frames_compared,
            carried.tracks_compared + mine.tracks_compared,
            carried.tracks_agreeing + mine.tracks_agreeing,
        )

    def report(self) -> ShadowReport:
        """The cumulative comparison, as HealthReport.shadow carries it."""
        numbers = self.numbers()
        return ShadowReport(
            previous_model=self.previous,
            frames_compared=numbers.frames_compared,
            tracks_compared=numbers.tracks_compared,
            tracks_agreeing=numbers.tracks_agreeing,
        )
