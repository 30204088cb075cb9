"""The scene synthesiser: detector training images with exact boxes, deterministic by seed.

A scene is a background (procedural street or a real street-view texture) with 0 to N sign faces
pasted on poles, each under a random perspective, scale (~12 to ~200 px), lighting, blur and
partial occlusion, then whole-image effects: noise, fog, rain, night, JPEG artefacts. Boxes come
from the warped face's own alpha, so they are exact whatever was done to it. Scene ``i`` of a
split depends on (seed, split, i) alone: any scene can be re-rendered on its own, in any order.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from training.data.categories import CATEGORIES, Category
from training.data.records import Box, LabeledImage
from training.data.sign_art import SignFace, cut_real_face, draw_random_face, load_rgb
from training.data.yolo import write_data_yaml, yolo_label_lines
from training.exceptions import DatasetError


@dataclass(frozen=True)
class SynthSettings:
    """How scenes are rendered."""

    width: int = 640
    height: int = 480
    min_sign_px: int = 12
    max_sign_px: int = 200
    max_signs: int = 4
    empty_fraction: float = 0.08
    """Share of scenes with no sign at all (background only)."""
    closeup_fraction: float = 0.2
    """Share of scenes showing one sign close up: from a third of the frame's height to past its
    edges (at least half of it in view), as in photos taken of a sign rather than of a road."""
    real_face_fraction: float = 0.7
    """Share of faces cut from real photos where the category has any; the rest are drawn."""
    real_background_fraction: float = 0.4
    effects: bool = True
    """Lighting, blur, occlusion and weather; off renders clean faces (tests, debugging)."""
    poles: bool = True
    plain_background: bool = False
    """A uniform grey background instead of streets (tests)."""
    category_weights: Mapping[Category, float] = field(
        default_factory=lambda: {
            Category.PROHIBITORY: 4.0,
            Category.END_OF_RESTRICTION: 0.8,
            Category.WARNING: 1.5,
            Category.YIELD: 0.8,
            Category.STOP: 0.8,
            Category.PRIORITY: 0.8,
            Category.MANDATORY: 1.2,
            Category.INFO_SQUARE: 0.8,
            Category.SPEED_RECT: 1.0,
            Category.TEXT_PLATE: 0.6,
        }
    )


@dataclass(frozen=True)
class PlacedSign:
    """A sign in a rendered scene: its exact box and what it is."""

    box: tuple[float, float, float, float]
    category: str
    label: str
    speed_value: float | None
    speed_unit: str | None
    text: str | None
    real: bool


CategoryOf = Callable[[LabeledImage, Box], Category | None]


class FacePool:
    """Real sign faces of one split, by category, loaded from their images when first drawn."""

    def __init__(self, records: Sequence[LabeledImage], category_of: CategoryOf) -> None:
        self._faces: dict[Category, list[tuple[Path, Box]]] = defaultdict(list)
        for image in records:
            for box in image.boxes:
                category = category_of(image, box)
                if category is not None and min(box.width, box.height) >= 8:
                    self._faces[category].append((image.path, box))
        for faces in self._faces.values():
            faces.sort(key=lambda item: (str(item[0]), item[1].x1, item[1].y1))

    def count(self, category: Category) -> int:
        """Real faces available for `category`."""
        return len(self._faces.get(category, ()))

    def sample(self, category: Category, rng: np.random.Generator, size: int) -> SignFace | None:
        """A random real face of `category`, preferring sources at least half `size`; or None."""
        faces = self._faces.get(category)
        if not faces:
            return None
        # Upscaling a 32 px crop to 150 px teaches blur, not signs: try a few for a sharp one.
        best = None
        for _ in range(4):
            path, box = faces[int(rng.integers(len(faces)))]
            if best is None or box.height > best[1].height:
                best = (path, box)
            if box.height >= size / 2:
                break
        assert best is not None
        return cut_real_face(_image(best[0]), best[1], category)


@lru_cache(maxsize=4096)
def _image(path: Path) -> np.ndarray:
    return load_rgb(path)


def _noise_texture(
    rng: np.random.Generator, h: int, w: int, base: np.ndarray, amount: float
) -> np.ndarray:
    small = rng.normal(0, amount, (max(h // 8, 1), max(w // 8, 1), 1))
    coarse = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    fine = rng.normal(0, amount / 3, (h, w, 1))
    return np.clip(base[None, None, :] + coarse + fine, 0, 255)


def procedural_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A street-like scene: sky, buildings or trees on the horizon, road and verges."""
    canvas = np.zeros((height, width, 3), np.float32)
    horizon = int(height * rng.uniform(0.3, 0.6))
    top = np.array(rng.choice([[120, 160, 215], [190, 195, 205], [225, 225, 230], [90, 110, 150]]))
    bottom = np.clip(top + rng.uniform(10, 40), 0, 255)
    t = np.linspace(0, 1, horizon)[:, None, None]
    canvas[:horizon] = top * (1 - t) + bottom * t
    # Skyline: buildings and tree blobs along the horizon.
    x = 0
    while x < width:
        w = int(rng.uniform(0.05, 0.25) * width)
        h = int(rng.uniform(0.05, 0.35) * height)
        y0 = max(horizon - h, 0)
        if rng.random() < 0.55:
            colour = rng.uniform(60, 220, 3)
            canvas[y0:horizon, x : x + w] = _noise_texture(
                rng, horizon - y0, min(w, width - x), colour, 12
            )
            for wy in range(y0 + 6, horizon - 8, 14):
                for wx in range(x + 4, min(x + w, width) - 8, 12):
                    canvas[wy : wy + 6, wx : wx + 5] = rng.uniform(30, 90)
        else:
            colour = np.array([rng.uniform(30, 80), rng.uniform(70, 130), rng.uniform(30, 70)])
            centre = (x + w // 2, horizon - h // 3)
            axes = (max(w // 2, 1), max(h // 2, 1))
            blob = np.zeros((height, width), np.uint8)
            cv2.ellipse(blob, centre, axes, 0, 0, 360, 255, -1)
            texture = _noise_texture(rng, height, width, colour, 25)
            canvas[blob > 0] = texture[blob > 0]
        x += w
    # Ground: verges, then the road narrowing to a vanishing point.
    canvas[horizon:] = _noise_texture(
        rng,
        height - horizon,
        width,
        np.array([rng.uniform(60, 110), rng.uniform(80, 130), rng.uniform(40, 80)]),
        20,
    )
    vanish = rng.uniform(0.3, 0.7) * width
    road = np.array(
        [
            [vanish - 4, horizon],
            [vanish + 4, horizon],
            [width * rng.uniform(0.8, 1.3), height],
            [width * rng.uniform(-0.3, 0.2), height],
        ],
        np.int32,
    )
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [road], 255)
    asphalt = _noise_texture(rng, height, width, np.full(3, rng.uniform(70, 120)), 10)
    canvas[mask > 0] = asphalt[mask > 0]
    for k in range(12):  # centre-line dashes
        a, b = k / 12, (k + 0.5) / 12
        ya, yb = horizon + (height - horizon) * a**2, horizon + (height - horizon) * b**2
        xa = vanish + (road[2][0] + road[3][0] - 2 * vanish) / 2 * a**2
        xb = vanish + (road[2][0] + road[3][0] - 2 * vanish) / 2 * b**2
        cv2.line(
            canvas, (int(xa), int(ya)), (int(xb), int(yb)), (230, 230, 225), max(1, int(6 * b))
        )
    return canvas.astype(np.uint8)


def real_background(
    rng: np.random.Generator, paths: Sequence[Path], width: int, height: int
) -> np.ndarray:
    """A mosaic of real sign-free street-view crops covering width x height."""
    canvas = np.zeros((height, width, 3), np.uint8)
    tile = int(rng.choice([height // 2, height, int(height * 0.75)]))
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            patch = _image(paths[int(rng.integers(len(paths)))])
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            patch = cv2.resize(patch, (tile, tile), interpolation=cv2.INTER_LINEAR)
            canvas[y : y + tile, x : x + tile] = patch[: height - y, : width - x]
    return canvas


def _warp_face(face: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Scale the face so its longer side is `size`, then turn it (yaw, roll, slight tilt)."""
    h, w = face.shape[:2]
    scale = size / max(h, w)
    tw, th = max(round(w * scale), 2), max(round(h * scale), 2)
    quad = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float32)
    yaw = rng.uniform(-0.45, 0.45)
    squash = math.cos(yaw)
    near = 1 + abs(yaw) * 0.15  # the nearer edge looks taller
    left_h, right_h = (near, 1 / near) if yaw > 0 else (1 / near, near)
    cx, cy = tw / 2, th / 2
    dst = np.array(
        [
            [cx - tw / 2 * squash, cy - th / 2 * left_h],
            [cx + tw / 2 * squash, cy - th / 2 * right_h],
            [cx + tw / 2 * squash, cy + th / 2 * right_h],
            [cx - tw / 2 * squash, cy + th / 2 * left_h],
        ],
        np.float32,
    )
    roll = math.radians(rng.uniform(-8, 8))
    rot = np.array([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    dst = (dst - [cx, cy]) @ rot.T
    dst -= dst.min(axis=0)
    out_w, out_h = math.ceil(dst[:, 0].max()) + 1, math.ceil(dst[:, 1].max()) + 1
    # Resample with premultiplied alpha: OpenCV does not, and edges would blend with the black
    # of transparent pixels, leaving a dark rim the detector could learn.
    alpha = face[..., 3:].astype(np.float32) / 255
    premultiplied = np.dstack([face[..., :3].astype(np.float32) * alpha, alpha * 255])
    resized = cv2.resize(
        premultiplied, (tw, th), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    matrix = cv2.getPerspectiveTransform(quad, dst.astype(np.float32))
    warped = cv2.warpPerspective(
        resized,
        matrix,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0, 0),
    )
    out_alpha = warped[..., 3:] / 255
    rgb = np.where(out_alpha > 1e-3, warped[..., :3] / np.maximum(out_alpha, 1e-3), 0)
    return np.dstack([np.clip(rgb, 0, 255), warped[..., 3:]]).round().astype(np.uint8)


def _light(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain = rng.uniform(0.55, 1.25)
    cast = rng.uniform(0.9, 1.1, 3)
    gamma = rng.uniform(0.8, 1.25)
    out = 255 * ((rgb.astype(np.float32) / 255) ** gamma) * gain * cast
    return np.clip(out, 0, 255)


def _occlude(canvas: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """Cover up to about a third of the sign with a branch-like blob or a pole."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    colour = rng.choice([[40, 80, 30], [70, 70, 70], [120, 90, 60], [30, 30, 30]]).tolist()
    if rng.random() < 0.5:
        px = int(x1 + rng.uniform(-0.1, 1.0) * w)
        cv2.rectangle(canvas, (px, y1 - 2), (px + max(int(w * 0.18), 1), y2 + 2), colour, -1)
    else:
        side = rng.integers(4)
        cx = x1 if side == 0 else x2 if side == 1 else int(x1 + rng.uniform(0, 1) * w)
        cy = y1 if side == 2 else y2 if side == 3 else int(y1 + rng.uniform(0, 1) * h)
        cv2.ellipse(
            canvas,
            (cx, cy),
            (max(int(w * 0.3), 1), max(int(h * 0.22), 1)),
            float(rng.uniform(0, 180)),
            0,
            360,
            colour,
            -1,
        )


def _weather(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out: np.ndarray = image.astype(np.float32)
    h, w = out.shape[:2]
    roll = rng.random()
    if roll < 0.1:  # fog
        fog = rng.uniform(0.25, 0.6)
        out = out * (1 - fog) + fog * rng.uniform(170, 220)
    elif roll < 0.2:  # night
        out = 255 * (out / 255) ** rng.uniform(1.8, 2.8) * rng.uniform(0.4, 0.8)
    elif roll < 0.28:  # rain streaks
        streaks = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(150, 500))):
            x, y = int(rng.integers(w)), int(rng.integers(h))
            length = int(rng.integers(8, 25))
            cv2.line(streaks, (x, y), (x + length // 5, y + length), 1.0, 1)
        out = out * 0.85 + streaks[..., None] * 60 + 15
    elif roll < 0.33:  # glare / over-exposure
        out = out * rng.uniform(1.2, 1.6) + 20
    if rng.random() < 0.5:
        out += rng.normal(0, rng.uniform(2, 9), out.shape)
    result: np.ndarray = np.clip(out, 0, 255).astype(np.uint8)
    return result


def _blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    roll = rng.random()
    if roll < 0.25:
        sigma = rng.uniform(0.5, 1.6)
        return cv2.GaussianBlur(image, (0, 0), sigma)
    if roll < 0.4:  # motion blur along the direction of travel
        k = int(rng.integers(3, 9))
        kernel: np.ndarray = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1 / k
        angle = rng.uniform(-20, 20)
        matrix = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), angle, 1)
        kernel = cv2.warpAffine(kernel, matrix, (k, k))
        blurred: np.ndarray = cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))
        return blurred
    return image


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class SceneRenderer:
    """Renders scenes from one split's face pool and background pool."""

    def __init__(
        self, settings: SynthSettings, faces: FacePool, backgrounds: Sequence[Path]
    ) -> None:
        self.settings = settings
        self.faces = faces
        self.backgrounds = sorted(backgrounds)
        weights = np.array([settings.category_weights.get(c, 0.0) for c in CATEGORIES])
        if weights.sum() <= 0:
            raise DatasetError("category_weights give no category a positive weight")
        self._weights = weights / weights.sum()

    def _face(self, rng: np.random.Generator, size: int) -> tuple[SignFace, bool]:
        category = CATEGORIES[int(rng.choice(len(CATEGORIES), p=self._weights))]
        if self.faces.count(category) and rng.random() < self.settings.real_face_fraction:
            face = self.faces.sample(category, rng, size)
            if face is not None:
                return face, True
        return draw_random_face(category, rng), False

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, list[PlacedSign]]:
        """One scene and the signs on it."""
        s = self.settings
        if s.plain_background:
            canvas = np.full((s.height, s.width, 3), 128, np.uint8)
        elif self.backgrounds and rng.random() < s.real_background_fraction:
            canvas = real_background(rng, self.backgrounds, s.width, s.height)
        else:
            canvas = procedural_background(rng, s.width, s.height)
        canvas = canvas.astype(np.float32)
        placed: list[PlacedSign] = []
        if rng.random() < s.closeup_fraction:
            size = int(rng.uniform(0.35, 1.2) * s.height)
            face, real = self._face(rng, size)
            sign = self._paste(canvas, face, size, real, placed, rng, min_visible=0.5)
            placed.extend([sign] if sign is not None else [])
            wanted = 0
        else:
            wanted = 0 if rng.random() < s.empty_fraction else int(rng.integers(1, s.max_signs + 1))
        for _ in range(wanted):
            size = round(math.exp(rng.uniform(math.log(s.min_sign_px), math.log(s.max_sign_px))))
            face, real = self._face(rng, size)
            sign = self._paste(canvas, face, size, real, placed, rng)
            if sign is not None:
                placed.append(sign)
        image = canvas.astype(np.uint8)
        if not s.effects:
            return image, placed
        return _weather(_blur(image, rng), rng), placed

    def _paste(
        self,
        canvas: np.ndarray,
        face: SignFace,
        size: int,
        real: bool,
        placed: Sequence[PlacedSign],
        rng: np.random.Generator,
        *,
        min_visible: float = 0.6,
    ) -> PlacedSign | None:
        warped = _warp_face(face.rgba, size, rng)
        alpha = warped[..., 3].astype(np.float32) / 255
        ys, xs = np.nonzero(alpha > 0.5)
        if len(xs) == 0:
            return None
        fh, fw = warped.shape[:2]
        height, width = canvas.shape[:2]
        for _ in range(10):
            x0 = int(rng.integers(-fw // 4, width - fw * 3 // 4))
            y0 = int(rng.integers(-fh // 4, int(height * 0.85) - fh // 2))
            box = (
                float(max(x0 + xs.min(), 0)),
                float(max(y0 + ys.min(), 0)),
                float(min(x0 + xs.max() + 1, width)),
                float(min(y0 + ys.max() + 1, height)),
            )
            visible = (box[2] - box[0]) * (box[3] - box[1])
            full = (xs.max() + 1 - xs.min()) * (ys.max() + 1 - ys.min())
            if (
                visible >= min_visible * full
                and box[2] - box[0] >= 4
                and box[3] - box[1] >= 4
                and all(_iou(box, other.box) < 0.05 for other in placed)
            ):
                break
        else:
            return None
        if self.settings.poles:  # drawn first, so the sign covers its top
            pole_x = x0 + fw // 2
            pole_w = max(fw // 12, 1)
            cv2.rectangle(
                canvas,
                (pole_x - pole_w // 2, y0 + fh // 2),
                (pole_x + pole_w // 2, height),
                rng.uniform(70, 160, 3).tolist(),
                -1,
            )
        sx1, sy1 = max(-x0, 0), max(-y0, 0)
        sx2, sy2 = min(fw, width - x0), min(fh, height - y0)
        region = canvas[y0 + sy1 : y0 + sy2, x0 + sx1 : x0 + sx2]
        a = alpha[sy1:sy2, sx1:sx2, None]
        face_rgb = warped[sy1:sy2, sx1:sx2, :3]
        lit = _light(face_rgb, rng) if self.settings.effects else face_rgb.astype(np.float32)
        region[:] = region * (1 - a) + lit * a
        if self.settings.effects and rng.random() < 0.15:
            _occlude(canvas, (int(box[0]), int(box[1]), int(box[2]), int(box[3])), rng)
        return PlacedSign(
            box, face.category.value, face.label, face.speed_value, face.speed_unit, face.text, real
        )


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of scene `index` of `split`: independent of every other scene."""
    split_key = int.from_bytes(hashlib.sha256(split.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, split_key, index])


def synthesise(
    out_dir: Path, renderers: Mapping[str, SceneRenderer], counts: Mapping[str, int], *, seed: int
) -> Path:
    """Render `counts[split]` scenes per split into a YOLO dataset; return its data.yaml.

    Beside the images and labels, ``scenes.jsonl`` records each sign's fine label, value and
    unit, for scoring readings (not just boxes) on synthetic scenes.
    """
    class_index = {c.value: i for i, c in enumerate(CATEGORIES)}
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "scenes.jsonl").open("w", encoding="utf-8") as log:
        for split, count in counts.items():
            images_dir, labels_dir = out_dir / "images" / split, out_dir / "labels" / split
            images_dir.mkdir(parents=True, exist_ok=True)
            labels_dir.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                rng = scene_rng(seed, split, index)
                image, signs = renderers[split].render(rng)
                name = f"{split}_{index:06d}"
                quality = int(rng.integers(60, 96))
                bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
                cv2.imwrite(
                    str(images_dir / f"{name}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality]
                )
                record = LabeledImage(
                    images_dir / f"{name}.jpg",
                    image.shape[1],
                    image.shape[0],
                    tuple(Box(*s.box, label=s.category) for s in signs),
                    name,
                    "synthetic",
                )
                (labels_dir / f"{name}.txt").write_text(
                    "".join(line + "\n" for line in yolo_label_lines(record, class_index))
                )
                log.write(
                    json.dumps(
                        {"image": f"images/{split}/{name}.jpg", "signs": [asdict(s) for s in signs]}
                    )
                    + "\n"
                )
    return write_data_yaml(out_dir, [c.value for c in CATEGORIES], list(counts))
