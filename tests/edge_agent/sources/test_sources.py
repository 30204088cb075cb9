"""Frame sources: files and folders read every frame; live ones reconnect and drop, counted."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.profile import CameraConfig
from edge_agent.sources import Frame, FrameGrabber, SourceError, create_source, source_kind
from edge_agent.sources.camera import CameraSource
from edge_agent.sources.folder import ImageFolderSource
from edge_agent.sources.stream import StreamSource
from edge_agent.sources.video import VideoFileSource
from fleet_protocol.messages import CameraState
from tests.waiting import wait_until


def _video(path: Path, frames: int = 12, fps: float = 10) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), (i * 20) % 256, np.uint8))
    writer.release()
    return path


def test_video_file_gives_every_frame_seen_when_decoded_with_its_decode_time(
    tmp_path: Path,
) -> None:
    wall = itertools.count(1_700_000_000.0, 2.5)  # a clock that is never the media time
    source = VideoFileSource(_video(tmp_path / "drive.mp4"), clock=lambda: next(wall))
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert len(frames) == 12
    assert frames[0].image.shape == (48, 64, 3)
    assert [f.index for f in frames] == list(range(12))
    assert frames[5].captured_at == 1_700_000_000.0 + 5 * 2.5
    assert all(f.decode_seconds > 0 for f in frames)
    assert source.state is CameraState.STOPPED
    with pytest.raises(SourceError, match="cannot open video"):
        VideoFileSource(tmp_path / "missing.mp4")


def test_a_looped_video_replays_from_its_start_at_its_own_rate_as_a_live_source(
    tmp_path: Path,
) -> None:
    config = CameraConfig(source=str(_video(tmp_path / "drive.mp4", frames=4, fps=50)), loop=True)
    source = create_source(config)
    assert source.live
    started = time.monotonic()
    frames = [source.read() for _ in range(10)]
    elapsed = time.monotonic() - started
    assert all(f is not None for f in frames)
    assert [f.index for f in frames if f is not None] == list(range(10))
    # Frame 4 is the first frame again: the same grey as frame 0.
    first, again = frames[0], frames[4]
    assert first is not None
    assert again is not None
    assert abs(int(again.image.mean()) - int(first.image.mean())) <= 2
    assert elapsed >= 9 / 50 * 0.9  # paced at the file's 50 fps, not decoded flat out
    assert source.state is CameraState.OK
    with pytest.raises(ValueError, match="cannot loop"):
        CameraConfig(source="0", kind="device", loop=True)


def test_folder_reads_images_in_order_and_skips_unreadable(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.full((8, 8, 3), i, np.uint8))
    (tmp_path / "001b.jpg").write_bytes(b"broken")
    source = ImageFolderSource(tmp_path, clock=lambda: 1_700_000_000.0)
    frames = [source.read() for _ in range(4)]
    assert [f.index for f in frames if f] == [0, 1, 3]  # the broken 001b.jpg keeps its place
    assert all(f.captured_at == 1_700_000_000.0 and f.decode_seconds > 0 for f in frames if f)
    assert frames[3] is None
    assert source.skipped == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        ImageFolderSource(tmp_path / "empty")


class FakeCapture:
    """An OpenCV-like capture that fails or yields frames as scripted (our own test double)."""

    def __init__(self, opened: bool, frames: int) -> None:
        self.opened, self.frames = opened, frames

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def grab(self) -> bool:
        if self.frames <= 0:
            return False
        self.frames -= 1
        return True

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self) -> None:
        self.opened = False


def test_live_capture_reconnects_with_doubling_backoff() -> None:
    script = [
        FakeCapture(False, 0),
        FakeCapture(False, 0),
        FakeCapture(True, 2),
        FakeCapture(False, 0),
        FakeCapture(True, 1),
    ]
    sleeps: list[float] = []
    source = StreamSource(
        "rtsp://cam/1",
        width=64,
        height=48,
        max_backoff_s=1.5,
        opener=lambda target: script.pop(0),
        sleep=sleeps.append,
        clock=lambda: 1_700_000_000.0,
    )
    frames = [source.read() for _ in range(3)]
    assert all(isinstance(f, Frame) and f.captured_at == 1_700_000_000.0 for f in frames)
    assert [f.index for f in frames if f] == [0, 1, 2]
    assert source.state.value == "ok"
    # Two failed opens, then after 2 frames one failed read and one failed open: backoff
    # doubles while failing and restarts from 0.5 s after success.
    assert sleeps == [0.5, 1.0, 0.5, 1.0]
    assert source.reconnects == 4
    source.close()
    assert source.state is CameraState.STOPPED
    assert source.read() is None


class FakeLive:
    """A live source producing frames as fast as asked (our own interface)."""

    name, live = "fake", True

    def __init__(self, frames: int, delay: float = 0.0) -> None:
        self.left, self.delay, self.index = frames, delay, 0

    def read(self) -> Frame | None:
        if self.left == 0:
            return None
        time.sleep(self.delay)
        self.left -= 1
        self.index += 1
        return Frame(np.zeros((2, 2, 3), np.uint8), time.time(), self.index - 1, 0.0)

    @property
    def state(self) -> CameraState:
        return CameraState.OK

    def close(self) -> None:
        self.left = 0


def test_a_slow_consumer_of_a_live_source_loses_the_oldest_frames_counted() -> None:
    grabber = FrameGrabber(FakeLive(50), fps_cap=0, queue_size=2).start()
    # The consumer stalls while capture goes on, through all 50 frames: 48 pushed out.
    wait_until(lambda: grabber.dropped == 48, 10, "capture through all 50 frames")
    taken = []
    while (frame := grabber.get(0.2)) is not None:
        taken.append(frame.index)
    grabber.stop()
    assert taken == [48, 49]  # the newest frames are kept
    assert grabber.dropped == 48


def test_a_recorded_source_is_never_dropped(tmp_path: Path) -> None:
    grabber = FrameGrabber(
        VideoFileSource(_video(tmp_path / "v.mp4", 20)), fps_cap=1000, queue_size=2
    ).start()
    time.sleep(0.2)  # the behaviour under test: a consumer that lags; capture must wait for it
    taken = []
    while not grabber.finished:
        frame = grabber.get(1)
        if frame is not None:
            taken.append(frame.index)
    grabber.stop()
    assert taken == list(range(20))
    assert grabber.dropped == 0


def test_the_fps_cap_spaces_live_frames_out() -> None:
    grabber = FrameGrabber(FakeLive(10_000, delay=0.001), fps_cap=20, queue_size=100).start()
    time.sleep(0.5)  # the window the rate is measured over
    grabber.stop()
    count = 0
    while grabber.get(0.01) is not None:
        count += 1
    assert 5 <= count <= 15  # about 20 per second, not the ~500 the source can give


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("0", "device"),
        ("rtsp://10.0.0.2/stream", "stream"),
        ("https://cam/mjpg", "stream"),
        ("drive.mp4", "video"),
    ],
)
def test_auto_kind_follows_the_form_of_the_source(source: str, kind: str) -> None:
    assert source_kind(CameraConfig(source=source)) == kind


def test_create_source_builds_each_kind(tmp_path: Path) -> None:
    assert isinstance(
        create_source(CameraConfig(source=str(_video(tmp_path / "a.mp4")))), VideoFileSource
    )
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((4, 4, 3), np.uint8))
    assert isinstance(create_source(CameraConfig(source=str(tmp_path))), ImageFolderSource)
    assert isinstance(create_source(CameraConfig(source="7")), CameraSource)
