"""Frames from a video file (read at the pipeline's pace, nothing dropped)."""

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
    live = False

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise SourceError(f"cannot open video {path}")
        self._clock = clock
        self._index = 0
        self._state = CameraState.OK

    def read(self) -> Frame | None:
        """The next frame, or None at the end."""
        started = time.perf_counter()
        ok, bgr = self._capture.read()
        if not ok:
            self._state = CameraState.STOPPED
            return None
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        frame = Frame(image, self._clock(), self._index, time.perf_counter() - started)
        self._index += 1
        return frame

    @property
    def state(self) -> CameraState:
        """OK while frames remain."""
        return self._state

    def close(self) -> None:
        """Release the file."""
        self._capture.release()
