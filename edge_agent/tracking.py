"""Tracking signs across frames so each physical sign passed yields one reading.

Detections are matched to tracks of the same category by IoU with the track's predicted box (its
last box moved by its velocity), or, for signs that grow fast as the vehicle nears them, by
centre distance relative to their size. Each track votes over what its frames read (type, value,
unit, class), weighted by confidence. A track's reading is emitted once: when it has been seen
in `confirm_frames` frames and its best view is at least `min_confidence` sure, or when it ends
having been seen in at least `min_frames` frames. A far-away sign is often read unsurely in its
first frames; holding an unsure track back (rather than sending or discarding its first guess)
lets the nearer, larger views decide.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_agent.reading.signs import SignReading

Box = tuple[float, float, float, float]
VoteKey = tuple[str, float | None, str | None, int | None]


@dataclass(frozen=True, slots=True)
class TrackedReading:
    """The one reading of a track: the vote's winner, with its best view."""

    track_id: int
    reading: SignReading
    """The most confident frame reading that agrees with the vote."""
    frames_seen: int
    agreement: float
    """Share of the track's confidence that voted for the winner (0-1)."""
    first_seen: float
    last_seen: float


@dataclass
class _Track:
    track_id: int
    category: str
    box: Box
    velocity: tuple[float, float] = (0.0, 0.0)
    hits: int = 1
    misses: int = 0
    emitted: bool = False
    first_seen: float = 0.0
    last_seen: float = 0.0
    votes: dict[VoteKey, float] = field(default_factory=lambda: defaultdict(float))
    best: dict[VoteKey, SignReading] = field(default_factory=dict)

    def predicted(self) -> Box:
        dx, dy = self.velocity
        x1, y1, x2, y2 = self.box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)

    def add(self, reading: SignReading) -> None:
        key: VoteKey = (
            reading.sign_type.value,
            reading.value,
            reading.unit,
            reading.gtsrb_class_id,
        )
        self.votes[key] += reading.confidence
        if key not in self.best or reading.confidence > self.best[key].confidence:
            self.best[key] = reading

    def result(self) -> TrackedReading:
        winner = max(self.votes, key=lambda k: self.votes[k])
        total = sum(self.votes.values())
        return TrackedReading(
            self.track_id,
            self.best[winner],
            self.hits,
            self.votes[winner] / total if total > 0 else 0.0,
            self.first_seen,
            self.last_seen,
        )


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre(box: Box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _affinity(track: _Track, box: Box) -> float:
    """How well a box continues a track: IoU, or a near-enough centre for a growing sign."""
    predicted = track.predicted()
    iou = _iou(predicted, box)
    if iou > 0:
        return iou
    (px, py), (bx, by) = _centre(predicted), _centre(box)
    size = max(predicted[2] - predicted[0], predicted[3] - predicted[1], 1.0)
    distance = float(np.hypot(px - bx, py - by)) / size
    return max(0.0, 0.5 - distance) * 0.2  # below any real overlap, above nothing


class SignTracker:
    """Turns per-frame readings into one reading per physical sign."""

    def __init__(
        self,
        *,
        confirm_frames: int = 3,
        min_frames: int = 2,
        max_misses: int = 5,
        min_affinity: float = 0.05,
        min_confidence: float = 0.0,
    ) -> None:
        if min_frames > confirm_frames:
            raise ValueError("min_frames must not exceed confirm_frames")
        self.confirm_frames = confirm_frames
        self.min_frames = min_frames
        self.max_misses = max_misses
        self.min_affinity = min_affinity
        self.min_confidence = min_confidence
        self._tracks: list[_Track] = []
        self._next_id = 0

    @property
    def active_tracks(self) -> int:
        """Tracks currently followed."""
        return len(self._tracks)

    def update(self, readings: Sequence[SignReading], timestamp: float) -> list[TrackedReading]:
        """Feed one frame's readings; return the readings that became due on this frame."""
        pairs = sorted(
            (
                (_affinity(t, r.box), ti, ri)
                for ti, t in enumerate(self._tracks)
                for ri, r in enumerate(readings)
                if t.category == r.category
            ),
            reverse=True,
        )
        used_tracks: set[int] = set()
        used_readings: set[int] = set()
        for affinity, ti, ri in pairs:
            if affinity < self.min_affinity or ti in used_tracks or ri in used_readings:
                continue
            used_tracks.add(ti)
            used_readings.add(ri)
            track, reading = self._tracks[ti], readings[ri]
            (ox, oy), (nx, ny) = _centre(track.box), _centre(reading.box)
            track.velocity = (nx - ox, ny - oy)
            track.box, track.hits, track.misses = reading.box, track.hits + 1, 0
            track.last_seen = timestamp
            track.add(reading)
        for ti, track in enumerate(self._tracks):
            if ti not in used_tracks:
                track.misses += 1
        for ri, reading in enumerate(readings):
            if ri not in used_readings:
                track = _Track(
                    self._next_id,
                    reading.category,
                    reading.box,
                    first_seen=timestamp,
                    last_seen=timestamp,
                )
                track.add(reading)
                self._next_id += 1
                self._tracks.append(track)
        due = []
        for track in self._tracks:
            if not track.emitted and track.hits >= self.confirm_frames:
                result = track.result()
                if result.reading.confidence >= self.min_confidence:
                    track.emitted = True
                    due.append(result)
        ended = [t for t in self._tracks if t.misses > self.max_misses]
        self._tracks = [t for t in self._tracks if t.misses <= self.max_misses]
        due.extend(self._finish(ended))
        return due

    def flush(self) -> list[TrackedReading]:
        """End every track (end of stream); return the readings still due."""
        ended, self._tracks = self._tracks, []
        return self._finish(ended)

    def _finish(self, ended: Sequence[_Track]) -> list[TrackedReading]:
        due = []
        for track in ended:
            if not track.emitted and track.hits >= self.min_frames:
                track.emitted = True
                due.append(track.result())
        return due
