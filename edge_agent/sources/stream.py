"""Frames from an RTSP or HTTP stream through FFmpeg, reconnecting with backoff."""

from __future__ import annotations

import cv2

from edge_agent.sources.live import ReconnectingCapture


class StreamSource(ReconnectingCapture):
    """An IP camera or stream URL; the stream's own resolution is used."""

    name = "stream"

    def _open(self, target: str) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture
