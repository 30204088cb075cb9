"""The interface of frame sources, and the capture thread that feeds the pipeline."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fleet_protocol.messages import CameraState


@dataclass(frozen=True, slots=True)
class Frame:
    """One RGB frame, when it was seen, and what it cost to turn into an image."""

    image: np.ndarray
    captured_at: float
    """Wall-clock time it was seen, Unix seconds: when a live source captured it, when a
    recorded one decoded it (a replayed file is seen as it is read: OpenCV tells no capture
    time of a recording, and its media time says nothing of the day it was shot)."""
    index: int
    decode_seconds: float
    """Time spent decoding it and converting it to RGB; for a live source not the wait for
    the camera's next frame."""


class FrameSource(Protocol):
    """Somewhere frames come from: a camera, a stream, a file, a folder."""

    name: str
    live: bool
    """Live sources drop old frames under load; recorded ones are read at the pipeline's pace."""

    def read(self) -> Frame | None:
        """The next frame; None at the end of a recorded source. May block; may raise."""
        ...

    def close(self) -> None:
        """Release the device or file."""
        ...

    @property
    def state(self) -> CameraState:
        """Whether frames are flowing."""
        ...


class FrameGrabber:
    """Reads a source on its own thread into a small queue, so capture never waits.

    For live sources a full queue drops its oldest frame (counted in `dropped`); recorded
    sources block instead, so no frame of a file is skipped. `fps_cap` spaces frames out.
    """

    def __init__(self, source: FrameSource, *, fps_cap: float, queue_size: int = 2) -> None:
        self.source = source
        self.fps_cap = fps_cap
        self.dropped = 0
        self._queue: collections.deque[Frame] = collections.deque()
        self._size = queue_size
        self._cond = threading.Condition()
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-grabber", daemon=True)

    def start(self) -> FrameGrabber:
        """Start capturing."""
        self._thread.start()
        return self

    def _run(self) -> None:
        interval = 1.0 / self.fps_cap if self.fps_cap > 0 else 0.0
        next_due = time.monotonic()
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                if self.source.live:
                    now = time.monotonic()
                    if now < next_due:
                        continue  # faster than the cap: skip, it is not a drop
                    next_due = max(next_due + interval, now)
                with self._cond:
                    while not self.source.live and len(self._queue) >= self._size:
                        if self._stop.is_set():
                            return
                        self._cond.wait(0.1)
                    if len(self._queue) >= self._size:
                        self._queue.popleft()
                        self.dropped += 1
                    self._queue.append(frame)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def get(self, timeout: float = 1.0) -> Frame | None:
        """The oldest waiting frame; None when none came within `timeout` or the source ended."""
        with self._cond:
            if not self._queue and not self._done:
                self._cond.wait(timeout)
            if not self._queue:
                return None
            frame = self._queue.popleft()
            self._cond.notify_all()
            return frame

    @property
    def finished(self) -> bool:
        """Whether a recorded source has ended and every frame was taken."""
        with self._cond:
            return self._done and not self._queue

    def stop(self) -> None:
        """Stop capturing and release the source."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(5)
        self.source.close()
