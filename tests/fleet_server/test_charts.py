"""Health chart geometry, pure: every known sample is a point inside the box, time along x."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleet_server.api.charts import HEIGHT, PAD, WIDTH, chart

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_n_samples_give_n_points_spread_by_time_within_the_box() -> None:
    drawn = chart("fps", "fps", [(at(0), 30.0), (at(1), 15.0), (at(3), 0.0)])
    assert len(drawn.points) == 3
    xs = [x for x, _ in drawn.points]
    assert xs == sorted(xs)
    assert xs[0] == PAD
    assert xs[-1] == WIDTH - PAD
    # The gap of two minutes is twice as wide as the gap of one.
    assert round(xs[2] - xs[1], 6) == round(2 * (xs[1] - xs[0]), 6)
    ys = [y for _, y in drawn.points]
    assert ys[0] == PAD  # the highest value at the top
    assert ys[2] == HEIGHT - PAD  # zero at the bottom
    assert drawn.polyline.count(",") == 3
    assert (drawn.low, drawn.high, drawn.latest) == (0.0, 30.0, 0.0)


def test_one_sample_is_one_point_in_the_middle_not_an_empty_box() -> None:
    drawn = chart("cpu", "%", [(at(0), 42.0)])
    assert drawn.points == ((WIDTH / 2, PAD),)
    assert drawn.start == drawn.end == at(0)


def test_samples_without_the_value_are_left_out_not_drawn_as_zero() -> None:
    drawn = chart("temperature", "°C", [(at(0), None), (at(1), 50.0), (at(2), None)])
    assert len(drawn.points) == 1
    assert chart("temperature", "°C", [(at(0), None)]).points == ()


def test_equal_values_draw_a_flat_line_inside_the_box() -> None:
    drawn = chart("outbox", "messages", [(at(0), 0.0), (at(1), 0.0)])
    assert [y for _, y in drawn.points] == [HEIGHT - PAD, HEIGHT - PAD]
