"""The records every importer produces: images with labelled boxes in pixel coordinates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fleet_protocol.taxonomy import SpeedUnit


@dataclass(frozen=True, slots=True)
class Box:
    """One labelled object, in pixels of its image; `x2`/`y2` are exclusive edges."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    """The dataset's own class name or code (``"14"``, ``"pl40"``, ``"stop"``)."""
    gtsrb_id: int | None = None
    speed_value: float | None = None
    speed_unit: SpeedUnit | None = None

    @property
    def width(self) -> float:
        """Width in pixels."""
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        """Height in pixels."""
        return self.y2 - self.y1


@dataclass(frozen=True, slots=True)
class LabeledImage:
    """An image file and what is on it.

    `group` names the physical scene or sign the image shows: the frames of one GTSRB track, the
    crops of one TT100K street view. Splits keep a group whole, so no sign is both trained on and
    scored on.
    """

    path: Path
    width: int
    height: int
    boxes: tuple[Box, ...]
    group: str
    source: str = field(default="")
    """Which dataset the record came from (``gtsrb_train``, ``tt100k`` ...)."""
