"""The tracker: one reading per physical sign, voted over its frames, whatever the detections do."""

from __future__ import annotations

import pytest

from edge_agent.reading.signs import SignReading
from edge_agent.tracking import SignTracker, TrackedReading
from fleet_protocol.taxonomy import SignType


def _sign(
    box: tuple[float, float, float, float],
    value: float | None = 50,
    *,
    confidence: float = 0.9,
    category: str = "prohibitory",
) -> SignReading:
    sign_type = SignType.SPEED_LIMIT if value else SignType.STOP
    return SignReading(
        box, category, sign_type, None, value, "km/h" if value else None, confidence, False
    )


def _approach(
    start: float, frames: int, growth: float = 1.08
) -> list[tuple[float, float, float, float]]:
    """Boxes of a sign the vehicle approaches: it grows and drifts right, as from a car."""
    boxes, size, x = [], 12.0, start
    for _ in range(frames):
        boxes.append((x, 100.0, x + size, 100.0 + size))
        x += size * 0.15
        size *= growth
    return boxes


def test_one_sign_seen_over_many_frames_yields_one_reading() -> None:
    tracker = SignTracker(confirm_frames=3)
    emitted = []
    for i, box in enumerate(_approach(300, 25)):
        emitted += tracker.update([_sign(box)], timestamp=i / 30)
    emitted += tracker.flush()
    assert len(emitted) == 1
    assert emitted[0].reading.value == 50
    assert emitted[0].frames_seen == 3  # emitted once confirmed; later frames add nothing


def test_two_signs_side_by_side_are_two_tracks() -> None:
    tracker = SignTracker(confirm_frames=3)
    left, right = _approach(100, 10), _approach(400, 10)
    emitted = []
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        emitted += tracker.update([_sign(a, 50), _sign(b, 80)], timestamp=i)
    assert sorted(e.reading.value or 0 for e in emitted) == [50, 80]


def test_the_vote_outweighs_a_misread_frame() -> None:
    tracker = SignTracker(confirm_frames=4)
    boxes = _approach(300, 4)
    readings = [
        _sign(boxes[0], 50),
        _sign(boxes[1], 80, confidence=0.6),
        _sign(boxes[2], 50),
        _sign(boxes[3], 50),
    ]
    emitted = [e for i, r in enumerate(readings) for e in tracker.update([r], timestamp=i)]
    [result] = emitted
    assert result.reading.value == 50
    assert result.agreement == pytest.approx(2.7 / 3.3)


def test_short_gaps_keep_the_track_and_long_ones_end_it() -> None:
    tracker = SignTracker(confirm_frames=5, min_frames=2, max_misses=2)
    boxes = _approach(300, 12, growth=1.0)
    emitted = []
    for i, box in enumerate(boxes):
        seen = i not in (2, 3)  # a two-frame dropout
        emitted += tracker.update([_sign(box)] if seen else [], timestamp=i)
    assert len(emitted) == 1
    assert tracker.active_tracks == 1


def test_a_track_too_short_to_confirm_is_reported_when_it_ends_if_seen_enough() -> None:
    tracker = SignTracker(confirm_frames=5, min_frames=2, max_misses=1)
    boxes = _approach(300, 2)
    emitted = [e for i, b in enumerate(boxes) for e in tracker.update([_sign(b)], timestamp=i)]
    assert emitted == []
    emitted += tracker.update([], timestamp=2)
    emitted += tracker.update([], timestamp=3)
    assert len(emitted) == 1
    flicker = SignTracker(confirm_frames=5, min_frames=2, max_misses=1)
    flicker.update([_sign((0, 0, 10, 10))], timestamp=0)
    assert flicker.flush() == []  # one frame is noise, not a sign


def test_two_detections_of_one_frame_never_share_a_track_whatever_their_categories() -> None:
    tracker = SignTracker(confirm_frames=2)
    box = (100.0, 100.0, 130.0, 130.0)
    emitted = []
    for i in range(2):
        emitted += tracker.update([_sign(box, 50), _sign(box, None, category="stop")], timestamp=i)
    assert sorted(e.reading.category for e in emitted) == ["prohibitory", "stop"]


def test_min_frames_above_confirm_frames_is_refused() -> None:
    with pytest.raises(ValueError, match="min_frames"):
        SignTracker(confirm_frames=2, min_frames=3)


def test_an_unsure_track_waits_for_a_sure_view_instead_of_sending_its_first_guess() -> None:
    tracker = SignTracker(confirm_frames=3, min_confidence=0.5)
    boxes = _approach(300, 8)
    unsure = [_sign(box, 30, confidence=0.3) for box in boxes[:4]]
    sure = [_sign(box, 80, confidence=0.9) for box in boxes[4:]]
    emitted = []
    for i, reading in enumerate(unsure + sure):
        emitted += tracker.update([reading], timestamp=i)
        if i < 4:
            assert emitted == []  # confirmed by frame 3, but nothing sure enough to send
    emitted += tracker.flush()
    assert [e.reading.value for e in emitted] == [80]
    assert emitted[0].frames_seen == 6  # once the sure views outvote the unsure ones


def test_a_track_that_never_gets_sure_is_still_reported_once_when_it_ends() -> None:
    tracker = SignTracker(confirm_frames=3, min_confidence=0.5)
    emitted = []
    for i, box in enumerate(_approach(300, 6)):
        emitted += tracker.update([_sign(box, confidence=0.3)], timestamp=i)
    assert emitted == []
    emitted += tracker.flush()
    assert len(emitted) == 1  # the agent decides whether so unsure a reading is sent


def test_a_far_sign_whose_category_flips_stays_one_track() -> None:
    tracker = SignTracker(confirm_frames=3, min_confidence=0.5)
    emitted = []
    for i, box in enumerate(_approach(300, 12)):
        category = ("prohibitory", "warning", "stop")[i % 3] if i < 6 else "stop"
        confidence = 0.3 if i < 6 else 0.9
        emitted += tracker.update(
            [_sign(box, None, confidence=confidence, category=category)], timestamp=i
        )
    emitted += tracker.flush()
    assert len(emitted) == 1
    assert emitted[0].reading.category == "stop"


def test_a_sign_the_detector_loses_for_a_few_frames_while_nearing_stays_one_track() -> None:
    # It keeps moving (and growing) while unseen: the prediction follows its velocity.
    tracker = SignTracker(confirm_frames=3, min_confidence=0.5)
    emitted = []
    for i, box in enumerate(_approach(300, 24, growth=1.1)):
        if 8 <= i < 15:  # seven frames lost
            emitted += tracker.update([], timestamp=i)
            continue
        emitted += tracker.update([_sign(box, confidence=0.3 if i < 8 else 0.9)], timestamp=i)
    emitted += tracker.flush()
    assert len(emitted) == 1
    assert emitted[0].frames_seen > 8


def test_an_unsure_two_frame_glimpse_is_not_reported() -> None:
    tracker = SignTracker(confirm_frames=3, min_frames=2, min_confidence=0.5)
    for i, box in enumerate(_approach(300, 2)):
        tracker.update([_sign(box, confidence=0.3)], timestamp=i)
    assert tracker.flush() == []
    sure = SignTracker(confirm_frames=3, min_frames=2, min_confidence=0.5)
    for i, box in enumerate(_approach(300, 2)):
        sure.update([_sign(box, confidence=0.8)], timestamp=i)
    assert len(sure.flush()) == 1


def test_a_sign_is_reported_early_only_from_a_view_large_enough() -> None:
    tracker = SignTracker(confirm_frames=3, min_confidence=0.5, min_report_px=28)
    emitted = []
    for i, box in enumerate(_approach(300, 20, growth=1.1)):  # 12 px growing to ~70 px
        emitted += tracker.update([_sign(box, confidence=0.9)], timestamp=i)
        if box[3] - box[1] < 28:
            assert emitted == []
    assert len(emitted) == 1
    assert emitted[0].reading.box[3] - emitted[0].reading.box[1] >= 28
    small = SignTracker(confirm_frames=3, min_confidence=0.5, min_report_px=28)
    for i in range(5):
        small.update([_sign((300, 100, 312, 112), confidence=0.9)], timestamp=i)
    assert len(small.flush()) == 1  # never large: reported when it ends


def test_a_reading_turned_down_is_offered_again_only_from_a_surer_view() -> None:
    tracker = SignTracker(confirm_frames=3, min_confidence=0.5)
    boxes = _approach(300, 8)
    offered = []
    for i, box in enumerate(boxes):
        confidence = 0.6 if i < 5 else 0.8
        due = tracker.update([_sign(box, confidence=confidence)], timestamp=i)
        offered += [(i, d.reading.confidence) for d in due]
        for d in due:
            if d.reading.confidence < 0.7:
                tracker.reject(d)  # e.g. OCR disagreed and the confidence fell below the bar
    assert offered == [(2, 0.6), (5, 0.8)]


def test_once_reported_a_sign_is_not_read_again_and_unread_detections_only_move_it() -> None:
    tracker = SignTracker(confirm_frames=3)
    boxes = _approach(300, 12)
    emitted = []
    for i, box in enumerate(boxes[:3]):
        assert tracker.to_read([(box, "prohibitory")]) == [True]  # growing: read each frame
        emitted += tracker.update([_sign(box)], timestamp=i)
    assert len(emitted) == 1
    other = (10.0, 10.0, 30.0, 30.0)  # a second, new sign elsewhere in the frame
    for i, box in enumerate(boxes[3:], start=3):
        wanted = tracker.to_read([(other, "prohibitory"), (box, "prohibitory")])
        # The new sign is read when first seen, then (keeping its size) not until reported...
        assert wanted == [i == 3, False]
        # ...and the reported one comes in unread (confidence 0): it stays one track, votes
        # nothing. The new one, read once and seen three times, is reported.
        first = _sign(other, 80) if wanted[0] else _sign(other, None, confidence=0.0)
        emitted += tracker.update([first, _sign(box, None, confidence=0.0)], timestamp=i)
    emitted += tracker.flush()
    assert sorted(e.reading.value or 0 for e in emitted) == [50, 80]
    assert tracker.active_tracks == 0


def test_a_sign_that_keeps_its_size_is_read_again_only_when_it_grows_or_now_and_then() -> None:
    tracker = SignTracker(confirm_frames=3, min_confidence=0.95, reread_every=5)
    box = (100.0, 100.0, 140.0, 140.0)
    reads = []
    for i in range(12):
        [wanted] = tracker.to_read([(box, "prohibitory")])
        reads.append(wanted)
        # Never sure enough to report, so the track stays open to reading.
        reading = _sign(box, confidence=0.5) if wanted else _sign(box, None, confidence=0.0)
        tracker.update([reading], timestamp=i)
    assert [i for i, r in enumerate(reads) if r] == [0, 5, 10]
    grown = (98.0, 98.0, 142.0, 143.0)  # 43 px tall against 40 read: more than 5% larger
    assert tracker.to_read([(grown, "prohibitory")]) == [True]
    assert tracker.to_read([((101.0, 101.0, 141.0, 142.0), "prohibitory")]) == [False]


def test_an_unread_detection_never_makes_a_reading_of_its_own() -> None:
    tracker = SignTracker(confirm_frames=2, min_frames=1)
    for i, box in enumerate(_approach(300, 5)):
        assert tracker.update([_sign(box, confidence=0.0)], timestamp=i) == []
    assert tracker.flush() == []


def test_a_sign_reported_when_it_leaves_the_view_says_when_its_best_view_was_seen() -> None:
    # Never large enough to report in view: it goes out when the track ends, 16 frames on.
    tracker = SignTracker(confirm_frames=3, max_misses=15, min_report_px=1000)
    boxes = _approach(300, 5)
    confidences = [0.6, 0.7, 0.95, 0.8, 0.7]
    emitted: list[TrackedReading] = []
    reported_at = None
    for i in range(40):
        seen = [_sign(boxes[i], confidence=confidences[i])] if i < len(boxes) else []
        due = tracker.update(seen, timestamp=100.0 + i)
        if due:
            emitted, reported_at = emitted + due, 100.0 + i
    [result] = emitted
    assert reported_at == 100.0 + len(boxes) + 15
    assert (result.first_seen, result.last_seen) == (100.0, 104.0)
    assert result.seen_at == 102.0  # the surest view's frame, the one `reading` is
    assert result.reading.confidence == 0.95


def test_each_reading_of_a_frame_is_told_the_track_it_continued_or_started() -> None:
    tracker = SignTracker()
    left, right = (10.0, 10.0, 50.0, 50.0), (200.0, 10.0, 240.0, 50.0)
    tracker.update([_sign(left), _sign(right)], 0.0)
    first = list(tracker.frame_track_ids)
    assert len(set(first)) == 2
    # the same signs a frame later, listed the other way round, and a new one
    tracker.update(
        [
            _sign((202.0, 10.0, 242.0, 50.0)),
            _sign((400.0, 10.0, 440.0, 50.0)),
            _sign((12.0, 10.0, 52.0, 50.0)),
        ],
        0.1,
    )
    assert tracker.frame_track_ids[0] == first[1]
    assert tracker.frame_track_ids[2] == first[0]
    assert tracker.frame_track_ids[1] not in first
