"""Frames from a local camera (V4L2 index), reconnecting when it drops out."""

from __future__ import annotations

import cv2

from edge_agent.sources.live import ReconnectingCapture


class CameraSource(ReconnectingCapture):
    """A camera by index, asked for the profile's resolution, one frame buffered."""

    name = "camera"

    def _open(self, target: str) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(int(target))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self._width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self._height)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture
