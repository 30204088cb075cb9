"""The reconnecting capture that live sources (camera, stream) share.

Both are OpenCV captures that can drop out: a read failure closes the capture and reopens it
after a delay that doubles up to `max_backoff_s`, while `state` says ``reconnecting``. A frame is
grabbed (which waits for the camera's next one) and then retrieved: its capture time is taken when
the grab returns, its decode time is the retrieval and colour conversion. (FFmpeg streams decode
partly inside the grab, which cannot be told apart from the wait: their decode time is a floor.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import cv2

from edge_agent.sources.base import Frame
from fleet_protocol.messages import CameraState


class Capture(Protocol):
    """What live sources need of an OpenCV capture."""

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        """Whether the device or stream opened."""
        ...

    def grab(self) -> bool:
        """Wait for the next frame and take it; False when none came."""
        ...

    def retrieve(self) -> tuple[bool, Any]:
        """The grabbed frame, decoded (BGR), or False."""
        ...

    def release(self) -> None:
        """Close it."""
        ...


class ReconnectingCapture:
    """An OpenCV capture reopened with backoff; frames are seen at `clock` (the wall clock)."""

    name = "live"
    live = True

    def __init__(
        self,
        target: str,
        *,
        width: int,
        height: int,
        max_backoff_s: float,
        opener: Callable[[str], Capture] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._target = target
        self._width, self._height = width, height
        self._max_backoff = max_backoff_s
        self._opener = opener or self._open
        self._sleep = sleep
        self._clock = clock
        self._capture: Capture | None = None
        self._backoff = 0.5
        self._index = 0
        self._closed = False
        self._state = CameraState.RECONNECTING
        self.reconnects = 0

    def _open(self, target: str) -> Capture:
        raise NotImplementedError("each live source opens its own kind of capture")

    def read(self) -> Frame | None:
        """The next frame; blocks through reconnects until one comes or the source is closed."""
        while not self._closed:
            if self._capture is None:
                capture = self._opener(self._target)
                if not capture.isOpened():
                    self._wait()
                    continue
                self._capture = capture
            frame = self._next_frame(self._capture)
            if frame is not None:
                self._state = CameraState.OK
                self._backoff = 0.5
                self._index += 1
                return frame
            self._capture.release()
            self._capture = None
            self._wait()
        return None

    def _next_frame(self, capture: Capture) -> Frame | None:
        if not capture.grab():
            return None
        seen, started = self._clock(), time.perf_counter()
        ok, bgr = capture.retrieve()
        if not ok:
            return None
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return Frame(image, seen, self._index, time.perf_counter() - started)

    def _wait(self) -> None:
        self._state = CameraState.RECONNECTING
        self.reconnects += 1
        self._sleep(self._backoff)
        self._backoff = min(self._backoff * 2, self._max_backoff)

    @property
    def state(self) -> CameraState:
        """OK while frames flow, reconnecting between attempts, stopped once closed."""
        return CameraState.STOPPED if self._closed else self._state

    def close(self) -> None:
        """Stop reading and release the device."""
        self._closed = True
        if self._capture is not None:
            self._capture.release()
