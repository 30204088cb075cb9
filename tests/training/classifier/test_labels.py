"""Classifier targets: GTSRB ids or other; the value on a speed sign, or none."""

from __future__ import annotations

from training.classifier.labels import (
    OTHER_INDEX,
    SIGN_LABELS,
    SPEED_LABELS,
    sign_target,
    speed_of_index,
    speed_target,
)
from training.data.records import Box


def test_sign_targets_are_gtsrb_ids_or_other() -> None:
    assert sign_target(Box(0, 0, 1, 1, "14", gtsrb_id=14)) == 14
    assert sign_target(Box(0, 0, 1, 1, "pl40")) == OTHER_INDEX == 43
    assert sign_target(None) == OTHER_INDEX
    assert SIGN_LABELS[OTHER_INDEX] == "other"


def test_speed_targets_cover_values_gtsrb_lacks_and_mph() -> None:
    for value in (5, 40, 90, 110, 130, 25, 55, 85):
        index = speed_target(Box(0, 0, 1, 1, "x", speed_value=value, speed_unit="km/h"))
        assert SPEED_LABELS[index] == str(value)
        assert speed_of_index(index) == value
    assert speed_target(Box(0, 0, 1, 1, "pm3.5", speed_value=3.5)) == 0  # not a speed
    assert speed_target(None) == 0
    assert speed_of_index(0) is None
