"""Scoring sign readings on labelled real scenes: matching and counting only, no I/O.

A prediction matches the unmatched true sign it overlaps most, at IoU >= `min_iou`, predictions
taken most confident first within each scene; a second prediction on a matched sign (a duplicate)
counts against precision. Four matchings answer four questions:

- **all signs**: any prediction against any sign (class-agnostic); class top-1 (the GTSRB class
  read on a matched sign) and recall by size are measured on its matches;
- **per category**: predictions of a detector category against signs of that category;
- **speed limit**: readings typed ``speed_limit`` against GTSRB speed-limit signs; the speed value
  is exact when the value and unit (km/h) are the sign's own.

Sizes are the larger side of the true box, in pixels of the scene as scored (960x565 for GTSDB).
The precision-recall curve sweeps the reading confidence over one run at a low detection
threshold: because matching is greedy by confidence, keeping only readings above a threshold
gives exactly the matches of their prefix, so one matching yields the whole curve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edge_agent.tracking import iou
from fleet_protocol.taxonomy import SignType, gtsrb_class

MIN_IOU = 0.4
SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<20", 0.0, 20.0),
    ("20-40", 20.0, 40.0),
    ("40-80", 40.0, 80.0),
    (">=80", 80.0, float("inf")),
)
SWEEP = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Reading confidences the precision-recall curve is sampled at."""

Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class TrueSign:
    """A labelled sign: where it is, its GTSRB class and its detector category."""

    box: Box
    gtsrb_id: int
    category: str

    @property
    def is_speed_limit(self) -> bool:
        """Whether the sign is a speed limit (not an end of one)."""
        return gtsrb_class(self.gtsrb_id).sign_type is SignType.SPEED_LIMIT

    @property
    def speed_value(self) -> int | None:
        """The km/h value of a speed-limit sign; None for any other sign."""
        return gtsrb_class(self.gtsrb_id).speed_value if self.is_speed_limit else None

    @property
    def size(self) -> float:
        """The box's larger side, pixels."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


@dataclass(frozen=True, slots=True)
class PredictedSign:
    """One reading of a scene, as ``roadsign-agent predict`` reports it."""

    box: Box
    category: str
    sign_type: str
    gtsrb_id: int | None
    value: float | None
    unit: str | None
    confidence: float


@dataclass(frozen=True, slots=True)
class SceneResult:
    """The signs of one scene and what was read on it."""

    scene: str
    truth: Sequence[TrueSign]
    predicted: Sequence[PredictedSign]


def match(
    truth: Sequence[Box], predicted: Sequence[tuple[Box, float]], min_iou: float
) -> list[int | None]:
    """For each prediction (in the given order), the index of the true box it matches, or None.

    Predictions are matched most confident first (ties in the given order), each to the unmatched
    true box it overlaps most at IoU >= `min_iou`.
    """
    matched: list[int | None] = [None] * len(predicted)
    used: set[int] = set()
    order = sorted(range(len(predicted)), key=lambda i: -predicted[i][1])
    for i in order:
        box = predicted[i][0]
        best, best_iou = None, min_iou
        for t, true_box in enumerate(truth):
            if t in used:
                continue
            overlap = iou(box, true_box)
            if overlap >= best_iou:
                best, best_iou = t, overlap
        if best is not None:
            used.add(best)
            matched[i] = best
    return matched


TruthFilter = Callable[[TrueSign], bool]
PredictionFilter = Callable[[PredictedSign], bool]


def _pairs(
    result: SceneResult, keep_truth: TruthFilter, keep_prediction: PredictionFilter, min_iou: float
) -> tuple[list[TrueSign], list[PredictedSign], list[int | None]]:
    truth = [t for t in result.truth if keep_truth(t)]
    predicted = [p for p in result.predicted if keep_prediction(p)]
    found = match([t.box for t in truth], [(p.box, p.confidence) for p in predicted], min_iou)
    return truth, predicted, found


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _is_speed_sign(t: TrueSign) -> bool:
    return t.is_speed_limit


def _is_speed_reading(p: PredictedSign) -> bool:
    return p.sign_type == SignType.SPEED_LIMIT.value


def _any_sign(_: object) -> bool:
    return True


@dataclass
class _Tally:
    """Counts of one matching over many scenes."""

    signs: int = 0
    predictions: int = 0
    matched: int = 0
    sizes: list[tuple[float, bool]] = field(default_factory=list)
    """(size, found) of every sign, for recall by size."""

    def add(
        self,
        truth: Sequence[TrueSign],
        predicted: Sequence[PredictedSign],
        found: Sequence[int | None],
    ) -> list[tuple[PredictedSign, TrueSign]]:
        """Count one scene's matching; return its matched (prediction, sign) pairs."""
        pairs = [(predicted[i], truth[t]) for i, t in enumerate(found) if t is not None]
        hit = {t for t in found if t is not None}
        self.signs += len(truth)
        self.predictions += len(predicted)
        self.matched += len(pairs)
        self.sizes += [(t.size, i in hit) for i, t in enumerate(truth)]
        return pairs

    def rates(self) -> dict[str, object]:
        """Counts, recall and precision (None where nothing was counted)."""
        return {
            "signs": self.signs,
            "predictions": self.predictions,
            "matched": self.matched,
            "recall": _rate(self.matched, self.signs),
            "precision": _rate(self.matched, self.predictions),
        }

    def recall_by_size(self) -> dict[str, dict[str, object]]:
        """Signs, found and recall per size bucket."""
        buckets: dict[str, dict[str, object]] = {}
        for name, low, high in SIZE_BUCKETS:
            inside = [hit for size, hit in self.sizes if low <= size < high]
            found = sum(inside)
            buckets[name] = {
                "signs": len(inside),
                "found": found,
                "recall": _rate(found, len(inside)),
            }
        return buckets


def _of_category(category: str) -> tuple[TruthFilter, PredictionFilter]:
    return (lambda t: t.category == category), (lambda p: p.category == category)


def score_scenes(results: Sequence[SceneResult], *, min_iou: float = MIN_IOU) -> dict[str, object]:
    """Recall, precision, class and speed-value accuracy, and recall by size over `results`."""
    everything, speed = _Tally(), _Tally()
    class_right = speed_exact = 0
    categories = sorted(
        {t.category for r in results for t in r.truth}
        | {p.category for r in results for p in r.predicted}
    )
    per_category = {c: _Tally() for c in categories}
    for result in results:
        pairs = everything.add(*_pairs(result, _any_sign, _any_sign, min_iou))
        class_right += sum(p.gtsrb_id == t.gtsrb_id for p, t in pairs)
        pairs = speed.add(*_pairs(result, _is_speed_sign, _is_speed_reading, min_iou))
        speed_exact += sum(p.value == t.speed_value and p.unit == "km/h" for p, t in pairs)
        for category, tally in per_category.items():
            tally.add(*_pairs(result, *_of_category(category), min_iou))
    return {
        "min_iou": min_iou,
        "scenes": len(results),
        "all_signs": {
            **everything.rates(),
            "class_top1": _rate(class_right, everything.matched),
            "recall_by_size": everything.recall_by_size(),
        },
        "speed_limit": {
            **speed.rates(),
            "value_exact": _rate(speed_exact, speed.matched),
            "recall_by_size": speed.recall_by_size(),
        },
        "per_category": {c: tally.rates() for c, tally in per_category.items()},
    }


def pr_curve(
    results: Sequence[SceneResult],
    *,
    speed_limit: bool = False,
    thresholds: Sequence[float] = SWEEP,
    min_iou: float = MIN_IOU,
) -> list[dict[str, float | None]]:
    """Precision and recall of the readings at or above each confidence threshold.

    All signs (class-agnostic) by default; with `speed_limit`, speed readings on speed signs.
    """
    keep_truth: TruthFilter = _is_speed_sign if speed_limit else _any_sign
    keep_prediction: PredictionFilter = _is_speed_reading if speed_limit else _any_sign
    total = 0
    scored: list[tuple[float, bool]] = []
    for result in results:
        truth, predicted, found = _pairs(result, keep_truth, keep_prediction, min_iou)
        total += len(truth)
        scored += [(p.confidence, t is not None) for p, t in zip(predicted, found, strict=True)]
    curve = []
    for threshold in thresholds:
        kept = [hit for confidence, hit in scored if confidence >= threshold]
        curve.append(
            {
                "confidence": threshold,
                "predictions": len(kept),
                "recall": _rate(sum(kept), total),
                "precision": _rate(sum(kept), len(kept)),
            }
        )
    return curve
