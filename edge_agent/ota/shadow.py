"""The shadow comparison, pure: does the model on probation read signs as the one it replaced?

During probation the previous model reads a sample of the frames the new one reads (the thread
doing that is shadow_runner.py). Here, per track of the frame loop's tracker: the new model's
readings vote for what the track says (every frame, as the tracker's votes do), and the
previous model's detections on a sampled frame are paired with that frame's tracks by IoU,
best pairs first, as tracking.py matches detections to tracks, voting for what the previous
model says of the track. A track is compared once both models read it; it agrees when both
votes' winners name the same sign type and value. No I/O, no threads, no clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from edge_agent.ota.state import ShadowNumbers
from edge_agent.reading.signs import SignReading
from edge_agent.tracking import iou

Says = tuple[str, float | None]
"""What a reading says, as far as agreement goes: sign type and value."""

MIN_IOU = 0.3
"""Overlap a previous-model detection needs with a track's box on the same frame to be paired
with it: the same pixels of the same frame, so the boxes of one sign overlap far more."""


@dataclass(frozen=True)
class TrackedBox:
    """One detection of a frame as the frame loop tracked it: its track and its reading
    (confidence 0: not classified on this frame, it only says where the sign is)."""

    track_id: int
    reading: SignReading


def says(reading: SignReading) -> Says:
    """What agreement compares of a reading."""
    return (reading.sign_type.value, reading.value)


def pair(
    tracked: Sequence[TrackedBox], shadow: Sequence[SignReading], *, min_iou: float = MIN_IOU
) -> dict[int, SignReading]:
    """The previous model's detection paired with each track of the frame, by IoU, best first;
    a detection overlapping no track by `min_iou` is paired with none."""
    pairs = sorted(
        (
            (iou(t.reading.box, s.box), ti, si)
            for ti, t in enumerate(tracked)
            for si, s in enumerate(shadow)
        ),
        reverse=True,
    )
    used_tracks: set[int] = set()
    used_shadow: set[int] = set()
    paired: dict[int, SignReading] = {}
    for overlap, ti, si in pairs:
        if overlap < min_iou or ti in used_tracks or si in used_shadow:
            continue
        used_tracks.add(ti)
        used_shadow.add(si)
        paired[tracked[ti].track_id] = shadow[si]
    return paired


@dataclass
class _Votes:
    new: dict[Says, float] = field(default_factory=lambda: defaultdict(float))
    previous: dict[Says, float] = field(default_factory=lambda: defaultdict(float))


def _winner(votes: dict[Says, float]) -> Says | None:
    return max(votes, key=lambda k: votes[k]) if votes else None


class ShadowTally:
    """The running comparison of one probation (the caller serialises calls)."""

    def __init__(self, *, min_iou: float = MIN_IOU, max_tracks: int = 4096) -> None:
        self.min_iou = min_iou
        self.max_tracks = max_tracks
        self.frames_compared = 0
        self._tracks: dict[int, _Votes] = {}

    def _votes(self, track_id: int) -> _Votes:
        votes = self._tracks.get(track_id)
        if votes is None:
            if len(self._tracks) >= self.max_tracks:
                # Bounded memory on a long probation: the oldest track that only one model read
                # goes first (it cannot count), else the oldest.
                one_sided = next((k for k, v in self._tracks.items() if not v.previous), None)
                self._tracks.pop(one_sided if one_sided is not None else next(iter(self._tracks)))
            votes = self._tracks[track_id] = _Votes()
        return votes

    def new_frame(self, tracked: Sequence[TrackedBox]) -> None:
        """The new model's readings of one frame vote for their tracks (unread ones do not)."""
        for item in tracked:
            if item.reading.confidence > 0:
                self._votes(item.track_id).new[says(item.reading)] += item.reading.confidence

    def shadow_frame(self, tracked: Sequence[TrackedBox], shadow: Sequence[SignReading]) -> None:
        """The previous model's readings of a sampled frame, paired with that frame's tracks."""
        self.frames_compared += 1
        for track_id, reading in pair(tracked, shadow, min_iou=self.min_iou).items():
            if reading.confidence > 0:
                self._votes(track_id).previous[says(reading)] += reading.confidence

    def numbers(self) -> ShadowNumbers:
        """The cumulative comparison so far."""
        compared = agreeing = 0
        for votes in self._tracks.values():
            new, previous = _winner(votes.new), _winner(votes.previous)
            if new is None or previous is None:
                continue
            compared += 1
            agreeing += new == previous
        return ShadowNumbers(self.frames_compared, compared, agreeing)
