"""Frames from a video file (read at the pipeline's pace, nothing dropped)."""

from __future__ import annotations

from pathlib import Path

import cv2

from edge_agent.sources.base import Frame
from edge_agent.sources.errors import SourceError
from fleet_protocol.messages import CameraState


class VideoFileSource:
    """A video file decoded with OpenCV; timestamps are the file's own."""

    name = "video"
    live = False

    def __init__(self, path: Path) -> None:
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise SourceError(f"cannot open video {path}")
        self._index = 0
        self._state = CameraState.OK

    def read(self) -> Frame | None:
        """The next frame, or None at the end."""
        ok, bgr = self._capture.read()
        if not ok:
            self._state = CameraState.STOPPED
            return None
        timestamp = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
        frame = Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), timestamp, self._index)
        self._index += 1
        return frame

    @property
    def state(self) -> CameraState:
        """OK while frames remain."""
        return self._state

    def close(self) -> None:
        """Release the file."""
        self._capture.release()
