"""The readings map's projection, pure: every positioned reading is a marker inside the map,
north up, east right, kilometres alike both ways; grid lines on round degrees."""

from __future__ import annotations

import math

import pytest

from fleet_server.api.readings_map import HEIGHT, WIDTH, readings_map
from fleet_server.ingest.worker import reading_row
from fleet_server.models import Reading
from tests.conftest import make_reading


def at(lat: float | None, lon: float | None, sign_type: str = "speed_limit") -> Reading:
    row = reading_row(make_reading())
    return Reading.model_validate({**row, "lat": lat, "lon": lon, "sign_type": sign_type})


def test_markers_lie_inside_the_map_north_up_east_right() -> None:
    drawn = readings_map([at(48.10, 11.50), at(48.20, 11.50), at(48.10, 11.70)])
    assert len(drawn.markers) == 3
    for m in drawn.markers:
        assert 0 <= m.x <= WIDTH
        assert 0 <= m.y <= HEIGHT
    south_west, north, east = drawn.markers
    assert north.y < south_west.y  # north is up
    assert north.x == pytest.approx(south_west.x)
    assert east.x > south_west.x  # east is right
    assert east.y == pytest.approx(south_west.y)
    # 0.1 degrees north against 0.2 degrees east at 48.15 N, in the same pixels per metre.
    ratio = (east.x - south_west.x) / (south_west.y - north.y)
    assert ratio == pytest.approx(2 * math.cos(math.radians(48.15)))


def test_readings_without_a_position_are_left_out_and_one_reading_is_centred() -> None:
    drawn = readings_map([at(None, None), at(52.5, 13.4)])
    [only] = drawn.markers
    assert (only.x, only.y) == (WIDTH / 2, HEIGHT / 2)
    assert readings_map([at(None, None)]).markers == ()


def test_grid_lines_fall_on_round_degrees_inside_the_map() -> None:
    drawn = readings_map([at(48.10, 11.50), at(48.20, 11.70)])
    verticals = [g for g in drawn.grid if g.vertical]
    horizontals = [g for g in drawn.grid if not g.vertical]
    assert len(verticals) >= 3
    assert len(horizontals) >= 3
    assert all(0 <= g.at <= (WIDTH if g.vertical else HEIGHT) for g in drawn.grid)
    assert [g.label for g in verticals] == ["11.5°", "11.6°", "11.7°"]
    assert [g.label for g in horizontals] == ["48.10°", "48.15°", "48.20°"]


def test_each_sign_type_has_its_own_colour_and_a_legend_entry() -> None:
    drawn = readings_map([at(1, 1, "stop"), at(1.001, 1, "speed_limit"), at(1, 1.001, "stop")])
    assert [t for t, _ in drawn.legend] == ["speed_limit", "stop"]
    colours = {m.reading.sign_type: m.colour for m in drawn.markers}
    assert colours["stop"] != colours["speed_limit"]
