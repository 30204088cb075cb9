"""Tracking signs across frames so each physical sign passed yields one reading.

Detections are matched to tracks by IoU with the track's predicted box (its last box moved by its
per-frame velocity for every frame since it was last seen), or, for signs that grow fast as the
vehicle nears them or that the detector lost for a few frames, by centre distance relative to
their size, with more reach the longer the track went unseen. A far sign's detected category can
flip from frame to frame (a stop sign seen as round-red, then as an octagon), so tracks match
across categories, preferring their own. Each track votes over what its frames read (type, value,
unit, class), weighted by confidence. A track's reading is emitted once: when it has been seen
in `confirm_frames` frames and its best view is at least `min_confidence` sure, or when it ends
having been seen in at least `min_frames` frames and either sure enough or seen `confirm_frames`
times (a two-frame unsure glimpse is noise or a far view of a sign seen better later). A
far-away sign is often read unsurely in its first frames; holding an unsure track back (rather
than sending or discarding its first guess) lets the nearer, larger views decide. For the same
reason a track is reported before it ends only from a view at least `min_report_px` tall. The
agent may still turn a reading down after its own checks (OCR disagreeing); `reject` then
re-opens the track, which is offered again only from a surer view than the one turned down.
Each view keeps the time of the frame it came from, so a reading says when its sign was seen
(its best view), however many frames later it is reported.

Reading (classifying) a detection is most of a frame's work after detection itself, so
`to_read` tells the agent which of a frame's detections are worth it; the rest are fed in as
unread (zero-confidence) readings, which move their track but cast no vote. Not worth reading:
a sign whose reading has gone out (nothing can change it now), and a sign seen less than
`reread_growth` times as tall as when it was last read, until `reread_every` frames have
passed. An approaching sign is read again as soon as it shows more pixels (a near one every
frame); a thing that keeps its size (a round tree the detector half-takes for a sign, a sign
seen from a stopped vehicle) is not re-read from the same pixels 30 times a second.
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
    """The surest view agreeing with the vote (while the sign is in view: the surest of those
    at least `min_report_px` tall)."""
    frames_seen: int
    agreement: float
    """Share of the track's confidence that voted for the winner (0-1)."""
    first_seen: float
    last_seen: float
    seen_at: float
    """Time of the frame `reading` comes from (the caller's timestamps, like first/last_seen)."""


@dataclass(frozen=True, slots=True)
class _View:
    reading: SignReading
    seen_at: float


@dataclass
class _Track:
    track_id: int
    category: str
    box: Box
    velocity: tuple[float, float] = (0.0, 0.0)
    hits: int = 1
    misses: int = 0
    emitted: bool = False
    read_px: float = 0.0
    """Height of the largest view read (classified) so far."""
    unread_frames: int = 0
    """Frames matched since the last one read."""
    rejected_below: float = 0.0
    """Confidence of the view last turned down: the next offer must beat it."""
    first_seen: float = 0.0
    last_seen: float = 0.0
    votes: dict[VoteKey, float] = field(default_factory=lambda: defaultdict(float))
    best: dict[VoteKey, _View] = field(default_factory=dict)
    best_large: dict[VoteKey, _View] = field(default_factory=dict)

    def predicted(self) -> Box:
        steps = self.misses + 1  # frames since the box was seen
        dx, dy = self.velocity[0] * steps, self.velocity[1] * steps
        x1, y1, x2, y2 = self.box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)

    def add(self, reading: SignReading, large_px: float, timestamp: float) -> None:
        if reading.confidence <= 0:
            self.unread_frames += 1
            return  # an unread detection: it says where the sign is, not what it says
        self.unread_frames = 0
        self.read_px = max(self.read_px, reading.box[3] - reading.box[1])
        key: VoteKey = (
            reading.sign_type.value,
            reading.value,
            reading.unit,
            reading.gtsrb_class_id,
        )
        self.votes[key] += reading.confidence
        view = _View(reading, timestamp)
        if key not in self.best or reading.confidence > self.best[key].reading.confidence:
            self.best[key] = view
        large = reading.box[3] - reading.box[1] >= large_px
        if large and (
            key not in self.best_large
            or reading.confidence > self.best_large[key].reading.confidence
        ):
            self.best_large[key] = view

    def result(self, *, large_only: bool = False) -> TrackedReading | None:
        """The vote's winner with its surest view (of those large enough, if `large_only`)."""
        if not self.votes:
            return None
        winner = max(self.votes, key=lambda k: self.votes[k])
        view = (self.best_large if large_only else self.best).get(winner)
        if view is None:
            return None
        total = sum(self.votes.values())
        return TrackedReading(
            self.track_id,
            view.reading,
            self.hits,
            self.votes[winner] / total if total > 0 else 0.0,
            self.first_seen,
            self.last_seen,
            view.seen_at,
        )


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either has no area)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre(box: Box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


OTHER_CATEGORY_FACTOR = 0.9
"""Affinity kept when a detection's category differs from its track's: a sign's own category
wins a close call, but a category flip does not start a second track."""


def _affinity(track: _Track, box: Box, category: str) -> float:
    """How well a box continues a track: IoU, or a near-enough centre for a growing sign."""
    predicted = track.predicted()
    same = 1.0 if category == track.category else OTHER_CATEGORY_FACTOR
    overlap = iou(predicted, box)
    if overlap > 0:
        return overlap * same
    (px, py), (bx, by) = _centre(predicted), _centre(box)
    size = max(predicted[2] - predicted[0], predicted[3] - predicted[1], 1.0)
    distance = float(np.hypot(px - bx, py - by)) / size
    # Twice the radius (in sizes) that clears the default min_affinity: one size from the
    # prediction a frame later, more the longer unseen, capped so it is not a whole-frame net.
    reach = min(2.0 + track.misses, 8.0)
    return 0.1 * max(0.0, 1.0 - distance / reach) * same  # below any real overlap


class SignTracker:
    """Turns per-frame readings into one reading per physical sign."""

    def __init__(
        self,
        *,
        confirm_frames: int = 3,
        min_frames: int = 2,
        max_misses: int = 15,
        min_affinity: float = 0.05,
        min_confidence: float = 0.0,
        min_report_px: float = 0.0,
        reread_growth: float = 1.05,
        reread_every: int = 10,
    ) -> None:
        if min_frames > confirm_frames:
            raise ValueError("min_frames must not exceed confirm_frames")
        self.confirm_frames = confirm_frames
        self.min_frames = min_frames
        self.max_misses = max_misses
        self.min_affinity = min_affinity
        self.min_confidence = min_confidence
        self.min_report_px = min_report_px
        self.reread_growth = reread_growth
        self.reread_every = reread_every
        self._tracks: list[_Track] = []
        self._next_id = 0
        self.frame_track_ids: list[int] = []
        """The track of each reading the last `update` was fed, in its order."""

    @property
    def active_tracks(self) -> int:
        """Tracks currently followed."""
        return len(self._tracks)

    def _match(self, boxes: Sequence[tuple[Box, str]]) -> dict[int, int]:
        """Track index of each (box, category) that continues one, by index; best pairs first."""
        pairs = sorted(
            (
                (_affinity(t, box, category), ti, ri)
                for ti, t in enumerate(self._tracks)
                for ri, (box, category) in enumerate(boxes)
            ),
            reverse=True,
        )
        used_tracks: set[int] = set()
        matches: dict[int, int] = {}
        for affinity, ti, ri in pairs:
            if affinity < self.min_affinity or ti in used_tracks or ri in matches:
                continue
            used_tracks.add(ti)
            matches[ri] = ti
        return matches

    def to_read(self, boxes: Sequence[tuple[Box, str]]) -> list[bool]:
        """For each of a frame's (box, category): is it worth reading (classifying)?

        A new sign is; one continuing a track is unless the track was reported, or was last
        read from a view more than 1/`reread_growth` as tall fewer than `reread_every` frames
        ago. `update` matches the same boxes the same way.
        """
        matches = self._match(boxes)
        wanted = []
        for ri, (box, _) in enumerate(boxes):
            if ri not in matches:
                wanted.append(True)
                continue
            track = self._tracks[matches[ri]]
            grown = box[3] - box[1] >= track.read_px * self.reread_growth
            due = track.unread_frames + 1 >= self.reread_every
            wanted.append(not track.emitted and (grown or due))
        return wanted

    def update(self, readings: Sequence[SignReading], timestamp: float) -> list[TrackedReading]:
        """Feed one frame's readings, seen at `timestamp`; return the readings now due."""
        matches = self._match([(r.box, r.category) for r in readings])
        used_tracks = set(matches.values())
        used_readings = set(matches)
        ids = [-1] * len(readings)
        for ri, ti in matches.items():
            track, reading = self._tracks[ti], readings[ri]
            ids[ri] = track.track_id
            (ox, oy), (nx, ny) = _centre(track.box), _centre(reading.box)
            steps = track.misses + 1
            track.velocity = ((nx - ox) / steps, (ny - oy) / steps)
            track.box, track.hits, track.misses = reading.box, track.hits + 1, 0
            track.category = reading.category
            track.last_seen = timestamp
            track.add(reading, self.min_report_px, timestamp)
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
                track.add(reading, self.min_report_px, timestamp)
                ids[ri] = track.track_id
                self._next_id += 1
                self._tracks.append(track)
        self.frame_track_ids = ids
        due = []
        for track in self._tracks:
            if not track.emitted and track.hits >= self.confirm_frames:
                result = track.result(large_only=True)
                if result is None:
                    continue
                confidence = result.reading.confidence
                if confidence >= self.min_confidence and confidence > track.rejected_below:
                    track.emitted = True
                    due.append(result)
        ended = [t for t in self._tracks if t.misses > self.max_misses]
        self._tracks = [t for t in self._tracks if t.misses <= self.max_misses]
        due.extend(self._finish(ended))
        return due

    def reject(self, tracked: TrackedReading) -> None:
        """The agent turned this reading down: offer the track again from a surer view."""
        for track in self._tracks:
            if track.track_id == tracked.track_id:
                track.emitted = False
                track.rejected_below = tracked.reading.confidence
                return

    def flush(self) -> list[TrackedReading]:
        """End every track (end of stream); return the readings still due."""
        ended, self._tracks = self._tracks, []
        return self._finish(ended)

    def _finish(self, ended: Sequence[_Track]) -> list[TrackedReading]:
        due = []
        for track in ended:
            if track.emitted or track.hits < self.min_frames:
                continue
            result = track.result()
            if result is None or result.reading.confidence <= track.rejected_below:
                continue  # turned down already, and no surer view came
            sure = result.reading.confidence >= self.min_confidence
            if sure or track.hits >= self.confirm_frames:
                track.emitted = True
                due.append(result)
        return due
