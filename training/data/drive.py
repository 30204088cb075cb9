"""A rendered drive: a camera moving down a road past K signs, as a video with its ground truth.

A pinhole camera looks down the road; each sign stands at the roadside at a known distance and
side. As the car drives on, each sign grows, slides outwards and leaves the frame, as on a real
dashcam. Used to check that the agent reports each physical sign exactly once, and to measure
its throughput on a realistic stream.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from training.data.sign_art import SPEED_VALUES_KMH, draw_speed_round, draw_stop, draw_yield
from training.data.synth import procedural_background


@dataclass(frozen=True)
class DriveSign:
    """A sign along the route."""

    distance_m: float
    side: float
    """Lateral offset in metres: positive right of the camera."""
    kind: str
    value: int | None


@dataclass(frozen=True)
class DriveSettings:
    """The drive's geometry and timing."""

    width: int = 640
    height: int = 480
    fps: float = 15.0
    speed_mps: float = 14.0
    focal_px: float = 560.0
    sign_diameter_m: float = 0.75
    sign_height_m: float = 1.2
    """How far above the camera the sign's centre is."""
    first_sign_m: float = 50.0
    spacing_m: float = 60.0
    lead_out_m: float = 40.0


def plan_signs(count: int, settings: DriveSettings, seed: int) -> list[DriveSign]:
    """`count` signs, alternating speed limits, stops and yields, left or right of the road."""
    rng = np.random.default_rng(seed)
    signs = []
    for i in range(count):
        kind = ("speed", "speed", "stop", "yield")[i % 4]
        value = int(rng.choice(SPEED_VALUES_KMH)) if kind == "speed" else None
        side = float(rng.uniform(3.5, 5.0) * (1 if i % 3 else -1))
        signs.append(DriveSign(settings.first_sign_m + i * settings.spacing_m, side, kind, value))
    return signs


def _face(sign: DriveSign) -> np.ndarray:
    if sign.kind == "stop":
        return draw_stop().rgba
    if sign.kind == "yield":
        return draw_yield().rgba
    return draw_speed_round(sign.value or 50).rgba


def render_drive(
    path: Path,
    count: int,
    *,
    settings: DriveSettings | None = None,
    seed: int = 0,
    signs: list[DriveSign] | None = None,
) -> list[DriveSign]:
    """Write the drive video to `path` (and its signs to a ``.json`` beside it): `signs`, or
    `count` signs planned by `plan_signs`."""
    s = settings or DriveSettings()
    signs = signs if signs is not None else plan_signs(count, s, seed)
    faces = [_face(sign) for sign in signs]
    background = procedural_background(np.random.default_rng(seed), s.width, s.height)
    total_m = signs[-1].distance_m + s.lead_out_m if signs else s.lead_out_m
    frames = int(total_m / s.speed_mps * s.fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), s.fps, (s.width, s.height))
    noise = np.random.default_rng(seed + 1)
    cx, cy = s.width / 2, s.height * 0.45
    for index in range(frames):
        travelled = index / s.fps * s.speed_mps
        canvas = background.astype(np.float32)
        for sign, face in zip(signs, faces, strict=True):
            depth = sign.distance_m - travelled
            if depth < 2.0:
                continue
            size = round(s.focal_px * s.sign_diameter_m / depth)
            if size < 6:
                continue
            x = cx + s.focal_px * sign.side / depth
            y = cy - s.focal_px * s.sign_height_m / depth
            small = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
            x0, y0 = round(x - size / 2), round(y - size / 2)
            xs0, ys0 = max(x0, 0), max(y0, 0)
            xs1, ys1 = min(x0 + size, s.width), min(y0 + size, s.height)
            if xs1 <= xs0 or ys1 <= ys0:
                continue
            patch = small[ys0 - y0 : ys1 - y0, xs0 - x0 : xs1 - x0].astype(np.float32)
            alpha = patch[..., 3:] / 255
            region = canvas[ys0:ys1, xs0:xs1]
            canvas[ys0:ys1, xs0:xs1] = region * (1 - alpha) + patch[..., :3] * alpha
        canvas += noise.normal(0, 3, canvas.shape)
        frame = np.clip(canvas, 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    path.with_suffix(".json").write_text(json.dumps([asdict(sign) for sign in signs], indent=2))
    return signs
