"""Frames from a video file: read at the pipeline's pace, nothing dropped; or looped.

A looped file plays at its own frame rate from its start again at each end, as a camera would:
a live source, so the capture thread caps and drops as it does for one. Demos and soak runs keep
a fleet reading that way without a camera.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2

from edge_agent.sources.base import Frame
from edge_agent.sources.errors import SourceError
from fleet_protocol.messages import CameraState


class VideoFileSource:
    """A video file decoded with OpenCV; each frame is seen when it is decoded (`clock`)."""

    name = "video"

    def __init__(
        self, path: Path, *, clock: Callable[[], float] = time.time, loop: bool = False
    ) -> None:
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise SourceError(f"cannot open video {path}")
        self._path = path
        self._clock = clock
        self._index = 0
        self._state = CameraState.OK
        self.live = loop
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        # A file that tells no rate plays at a camera's usual 25.
        self._frame_interval = 1.0 / fps if fps > 0 else 1.0 / 25
        self._next_due = time.monotonic()

    def read(self) -> Frame | None:
        """The next frame, or None at the end."""
        if self.live:
            self._wait_for_next_frame()
        started = time.perf_counter()
        ok, bgr = self._capture.read()
        if not ok and self.live and self._index > 0:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._capture.read()
        if not ok:
            if self.live:
                raise SourceError(f"cannot read video {self._path} from its start again")
            self._state = CameraState.STOPPED
            return None
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        frame = Frame(image, self._clock(), self._index, time.perf_counter() - started)
        self._index += 1
        return frame

    def _wait_for_next_frame(self) -> None:
        # Real time, as a camera delivers: decoding ahead would only burn frames the cap skips.
        delay = self._next_due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next_due = max(self._next_due + self._frame_interval, time.monotonic())

    @property
    def state(self) -> CameraState:
        """OK while frames remain (always, looped)."""
        return self._state

    def close(self) -> None:
        """Release the file."""
        self._capture.release()
