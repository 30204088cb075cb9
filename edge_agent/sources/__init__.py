"""Frame sources behind one interface, chosen through an explicit registry.

``device`` (a camera index) and ``stream`` (RTSP/HTTP) are live and reconnect with backoff;
``video`` and ``folder`` are recorded and read at the pipeline's pace. Every frame carries the
wall-clock time it was seen and the time its decoding took.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from edge_agent.profile import CameraConfig
from edge_agent.sources.base import Frame, FrameGrabber, FrameSource
from edge_agent.sources.errors import SourceError


def source_kind(config: CameraConfig) -> str:
    """What `config.source` is, resolving ``auto`` from its form."""
    if config.kind != "auto":
        return config.kind
    if config.source.isdigit():
        return "device"
    if urlsplit(config.source).scheme in {"rtsp", "rtsps", "http", "https"}:
        return "stream"
    return "folder" if Path(config.source).is_dir() else "video"


def _camera(config: CameraConfig) -> FrameSource:
    from edge_agent.sources.camera import CameraSource

    return CameraSource(
        config.source,
        width=config.width,
        height=config.height,
        max_backoff_s=config.reconnect_max_backoff_s,
    )


def _stream(config: CameraConfig) -> FrameSource:
    from edge_agent.sources.stream import StreamSource

    return StreamSource(
        config.source,
        width=config.width,
        height=config.height,
        max_backoff_s=config.reconnect_max_backoff_s,
    )


def _video(config: CameraConfig) -> FrameSource:
    from edge_agent.sources.video import VideoFileSource

    return VideoFileSource(Path(config.source), loop=config.loop)


def _folder(config: CameraConfig) -> FrameSource:
    from edge_agent.sources.folder import ImageFolderSource

    return ImageFolderSource(Path(config.source))


SOURCES: dict[str, Callable[[CameraConfig], FrameSource]] = {
    "device": _camera,
    "stream": _stream,
    "video": _video,
    "folder": _folder,
}


def create_source(config: CameraConfig) -> FrameSource:
    """The frame source a profile's camera section describes."""
    return SOURCES[source_kind(config)](config)


__all__ = [
    "SOURCES",
    "Frame",
    "FrameGrabber",
    "FrameSource",
    "SourceError",
    "create_source",
    "source_kind",
]
