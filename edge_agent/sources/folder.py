"""Frames from a folder of images, in name order; each is seen when it is decoded."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge_agent.sources.base import Frame
from edge_agent.sources.errors import SourceError
from fleet_protocol.messages import CameraState

SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp"}


class ImageFolderSource:
    """Each image a frame; unreadable files are skipped and counted."""

    name = "folder"
    live = False

    def __init__(self, folder: Path, *, clock: Callable[[], float] = time.time) -> None:
        if not folder.is_dir():
            raise SourceError(f"{folder} is not a folder")
        self._files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
        if not self._files:
            raise SourceError(f"no images in {folder}")
        self._clock = clock
        self._index = 0
        self.skipped = 0

    def read(self) -> Frame | None:
        """The next readable image, or None after the last."""
        while self._index < len(self._files):
            path = self._files[self._index]
            self._index += 1
            started = time.perf_counter()
            bgr = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                self.skipped += 1
                continue
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            return Frame(image, self._clock(), self._index - 1, time.perf_counter() - started)
        return None

    @property
    def state(self) -> CameraState:
        """OK until the last image."""
        return CameraState.OK if self._index < len(self._files) else CameraState.STOPPED

    def close(self) -> None:
        """Nothing to release."""
