"""Endless MJPEG cameras over HTTP, for tests that run real agents: a rendered drive, or any frames.

A recorded video is read at the pipeline's pace and ends; a fleet test needs cameras that keep
sending frames at a camera's rate for as long as the test runs, at a cost that twenty agents on
two cores can afford. So the frames (a drive rendered once by training.data.drive, or images) are
kept as JPEG and sent to every client as ``multipart/x-mixed-replace`` at `fps`, looping, the way
an IP camera serves MJPEG; the agent reads it with its real stream source (FFmpeg).
"""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tests.mosquitto import free_port
from training.data.drive import DriveSettings, DriveSign, render_drive
from training.data.sign_art import SPEED_VALUES_KMH

BOUNDARY = b"frame"


@dataclass(frozen=True)
class DriveStream:
    """A running stream: its URL, the signs one loop passes and how long a loop takes."""

    url: str
    signs: list[DriveSign]
    loop_s: float


def speed_limit_road(count: int, settings: DriveSettings, seed: int) -> list[DriveSign]:
    """Mostly speed limits (three in four; a stop sign the fourth), left and right: the signs
    whose value a model can misread and OCR can contradict."""
    rng = np.random.default_rng(seed)
    return [
        DriveSign(
            distance_m=settings.first_sign_m + i * settings.spacing_m,
            side=float(rng.uniform(3.5, 5.0) * (1 if i % 3 else -1)),
            kind="stop" if i % 4 == 3 else "speed",
            value=None if i % 4 == 3 else int(rng.choice(SPEED_VALUES_KMH)),
        )
        for i in range(count)
    ]


def drive_frames(
    work: Path, *, signs: int, settings: DriveSettings, seed: int
) -> tuple[list[bytes], list[DriveSign]]:
    """The drive's frames as JPEG bytes and its signs."""
    video = work / "drive.mp4"
    planned = render_drive(
        video, signs, settings=settings, signs=speed_limit_road(signs, settings, seed)
    )
    capture = cv2.VideoCapture(str(video))
    frames: list[bytes] = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            encoded, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert encoded, "OpenCV could not encode a frame as JPEG"
            frames.append(data.tobytes())
    finally:
        capture.release()
    assert frames, f"the rendered drive {video} has no frames"
    return frames, planned


def _handler(frames: list[bytes], fps: float) -> type[http.server.BaseHTTPRequestHandler]:
    class MjpegHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header(
                "Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}"
            )
            self.end_headers()
            started = time.monotonic()
            sent = 0
            try:
                while not getattr(self.server, "stopping", False):
                    data = frames[sent % len(frames)]
                    self.wfile.write(
                        b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(data) + data + b"\r\n"
                    )
                    sent += 1
                    # Paced to the camera's clock, not to how fast the client reads.
                    time.sleep(max(0.0, started + sent / fps - time.monotonic()))
            except (BrokenPipeError, ConnectionResetError):
                return  # the agent went away (stopped or killed): its stream ends

        def log_message(self, format: str, *args: object) -> None:
            return  # one line per frame request would drown the test's log

    return MjpegHandler


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    stopping = False


@contextmanager
def mjpeg_camera(frames: list[bytes], fps: float) -> Iterator[str]:
    """Serve JPEG `frames` at `fps`, looping, on a free loopback port; yields the stream's URL."""
    server = _Server(("127.0.0.1", free_port()), _handler(frames, fps))
    thread = threading.Thread(target=server.serve_forever, name="mjpeg", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/camera.mjpg"
    finally:
        server.stopping = True
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def drive_stream(
    work: Path,
    *,
    fps: float = 2.0,
    signs: int = 12,
    seed: int = 3,
    settings: DriveSettings | None = None,
) -> Iterator[DriveStream]:
    """Serve a rendered drive at `fps`, looping, on a free loopback port."""
    # Small frames and large signs: cheap to detect, and large enough that OCR reads the digits
    # of a speed limit, so a model that misreads them is contradicted.
    settings = settings or DriveSettings(
        width=320, height=240, focal_px=280.0, sign_diameter_m=2.2, fps=fps
    )
    work.mkdir(parents=True, exist_ok=True)
    frames, planned = drive_frames(work, signs=signs, settings=settings, seed=seed)
    with mjpeg_camera(frames, fps) as url:
        yield DriveStream(url=url, signs=planned, loop_s=len(frames) / fps)
