"""The classifier's two label spaces and the targets of each labelled box.

``sign``: the 43 GTSRB classes, then ``other`` for any sign outside them. ``speed``: ``none``,
then every value a speed sign shows in km/h or mph; the unit comes from the sign's design
(round: the region's km/h; rectangular plate: mph), not from this head.
"""

from __future__ import annotations

from edge_agent.reading.classifier import NO_SPEED, OTHER
from fleet_protocol.taxonomy import GTSRB_CLASS_COUNT
from training.data.records import Box

SPEED_VALUES = (
    5,
    10,
    15,
    20,
    25,
    30,
    35,
    40,
    45,
    50,
    55,
    60,
    65,
    70,
    75,
    80,
    85,
    90,
    100,
    110,
    120,
    130,
)
SIGN_LABELS: tuple[str, ...] = (*(str(i) for i in range(GTSRB_CLASS_COUNT)), OTHER)
SPEED_LABELS: tuple[str, ...] = (NO_SPEED, *(str(v) for v in SPEED_VALUES))
OTHER_INDEX = SIGN_LABELS.index(OTHER)
_SPEED_INDEX = {value: i for i, value in enumerate(SPEED_VALUES, start=1)}


def sign_target(box: Box | None) -> int:
    """Index in `SIGN_LABELS` of a box (None: a background crop, which is ``other``)."""
    if box is None or box.gtsrb_id is None:
        return OTHER_INDEX
    return box.gtsrb_id


def speed_target(box: Box | None) -> int:
    """Index in `SPEED_LABELS`: the value written on the sign, or ``none``."""
    if box is None or box.speed_value is None:
        return 0
    return _SPEED_INDEX.get(int(box.speed_value), 0)


def speed_of_index(index: int) -> int | None:
    """The value of a `SPEED_LABELS` index; None for ``none``."""
    return None if index == 0 else SPEED_VALUES[index - 1]
