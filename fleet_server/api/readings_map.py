"""The readings map, pure: positions of readings -> markers on a plain grid, no tiles.

An equirectangular projection of the readings' own bounding box (padded, and widened so that
a single reading or a straight road still gets a box): longitude is scaled by the cosine of
the middle latitude, so a kilometre east is as long on screen as a kilometre north. Grid lines
fall on round fractions of a degree, labelled, so an operator can read positions off it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fleet_server.models import Reading

WIDTH = 800
HEIGHT = 520
PAD = 20
MIN_SPAN_DEG = 0.002
"""The least span a map shows (about 200 m): one reading is a dot in a street, not the world."""
COLOURS = ("#2b6cb0", "#b3261e", "#0a7d32", "#9a6700", "#6b46c1", "#c05621", "#2c7a7b", "#555")


@dataclass(frozen=True)
class Marker:
    """One reading on the map."""

    x: float
    y: float
    colour: str
    reading: Reading


@dataclass(frozen=True)
class GridLine:
    """A labelled line of the grid: vertical (a longitude) or horizontal (a latitude)."""

    vertical: bool
    at: float
    label: str


@dataclass(frozen=True)
class ReadingsMap:
    """Markers and grid of a WIDTH x HEIGHT map, and a colour per sign type."""

    markers: tuple[Marker, ...]
    grid: tuple[GridLine, ...]
    legend: tuple[tuple[str, str], ...]
    width: int = WIDTH
    height: int = HEIGHT


def _step(span: float) -> float:
    """A round grid step giving about five lines across `span` degrees."""
    raw = span / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    return float(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))


def _lines(low: float, high: float, step: float) -> list[float]:
    first = math.ceil(low / step) * step
    count = int((high - first) / step + 1e-9) + 1
    return [round(first + i * step, 10) for i in range(max(count, 0))]


def readings_map(readings: Sequence[Reading]) -> ReadingsMap:
    """The map of the readings that have a position (others are left out)."""
    placed = [r for r in readings if r.lat is not None and r.lon is not None]
    types = sorted({r.sign_type for r in placed})
    colour = {t: COLOURS[i % len(COLOURS)] for i, t in enumerate(types)}
    legend = tuple((t, colour[t]) for t in types)
    if not placed:
        return ReadingsMap((), (), legend)
    lats = [float(r.lat or 0) for r in placed]
    lons = [float(r.lon or 0) for r in placed]
    middle = (min(lats) + max(lats)) / 2
    stretch = max(math.cos(math.radians(middle)), 0.01)  # east-west degrees shrink poleward
    lat_span = max(max(lats) - min(lats), MIN_SPAN_DEG)
    lon_span = max(max(lons) - min(lons), MIN_SPAN_DEG / stretch)
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    # One scale for both axes (pixels per north-south degree), the smaller that fits.
    scale = min(inner_h / lat_span, inner_w / (lon_span * stretch)) * 0.9
    lat_c, lon_c = middle, (min(lons) + max(lons)) / 2

    def x_of(lon: float) -> float:
        return WIDTH / 2 + (lon - lon_c) * stretch * scale

    def y_of(lat: float) -> float:
        return HEIGHT / 2 - (lat - lat_c) * scale

    markers = tuple(
        Marker(x_of(lon), y_of(lat), colour[r.sign_type], r)
        for r, lat, lon in zip(placed, lats, lons, strict=True)
    )
    west, east = lon_c - WIDTH / 2 / (stretch * scale), lon_c + WIDTH / 2 / (stretch * scale)
    south, north = lat_c - HEIGHT / 2 / scale, lat_c + HEIGHT / 2 / scale
    lon_step, lat_step = _step(east - west), _step(north - south)
    grid = tuple(
        [
            GridLine(True, x_of(lon), f"{lon:.{_decimals(lon_step)}f}°")
            for lon in _lines(west, east, lon_step)
        ]
        + [
            GridLine(False, y_of(lat), f"{lat:.{_decimals(lat_step)}f}°")
            for lat in _lines(south, north, lat_step)
        ]
    )
    return ReadingsMap(markers, grid, legend)


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step)))
