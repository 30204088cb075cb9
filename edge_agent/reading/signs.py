"""From a frame to sign readings: detect, cut crops, classify, and decide what each sign says.

The detector's category says what kind of sign it is (a round red prohibition, a rectangular
mph plate...), the classifier says which GTSRB sign it is and what number it carries. Where the
two sources can disagree (the GTSRB class implies 30 km/h, the speed head reads 80), the reading
says so and its confidence drops: neither source is silently preferred.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_agent.bundle import load_bundle, load_metadata, pick_detector
from edge_agent.detection import Detection, Detector
from edge_agent.reading.classifier import CropClassifier, CropReading
from edge_agent.reading.tiling import TiledDetection, TilingPolicy
from fleet_protocol.taxonomy import SignType, SpeedUnit, gtsrb_class

DISAGREEMENT_PENALTY = 0.5

_TYPE_OF_CATEGORY: dict[str, SignType] = {
    "prohibitory": SignType.PROHIBITORY,
    "end_of_restriction": SignType.END_OF_RESTRICTIONS,
    "warning": SignType.WARNING,
    "yield": SignType.YIELD,
    "stop": SignType.STOP,
    "priority": SignType.PRIORITY_ROAD,
    "mandatory": SignType.MANDATORY,
    "info_square": SignType.PEDESTRIAN_CROSSING,
    "speed_rect": SignType.SPEED_LIMIT,
    "text_plate": SignType.SUPPLEMENTARY_TEXT,
}
# Categories whose class the crop classifier may refine (GTSRB has signs of these shapes).
_REFINED = {"prohibitory", "end_of_restriction", "warning", "mandatory"}
# The classifier's types each refinable category may take.
_FITS_SHAPE: dict[str, set[SignType]] = {
    "prohibitory": {
        SignType.SPEED_LIMIT,
        SignType.NO_PASSING,
        SignType.NO_ENTRY,
        SignType.PROHIBITORY,
        SignType.STOP,
        SignType.YIELD,
    },
    "end_of_restriction": {SignType.END_OF_SPEED_LIMIT, SignType.END_OF_RESTRICTIONS},
    "warning": {SignType.WARNING, SignType.RIGHT_OF_WAY, SignType.YIELD},
}


@dataclass(frozen=True, slots=True)
class SignReading:
    """What one detected sign says."""

    box: tuple[float, float, float, float]
    category: str
    sign_type: SignType
    gtsrb_class_id: int | None
    value: float | None
    unit: SpeedUnit | None
    confidence: float
    sources_disagree: bool
    view: np.ndarray | None = field(default=None, compare=False, repr=False)
    """The sign's pixels, where the caller keeps them (for OCR and the attached crop)."""


def interpret(detection: Detection, crop: CropReading, *, round_unit: SpeedUnit) -> SignReading:
    """One reading from a detection and the classifier's view of its crop."""
    category = detection.category
    sign_type = _TYPE_OF_CATEGORY.get(category, SignType.OTHER)
    gtsrb_id = crop.gtsrb_id
    confidence = detection.score
    if gtsrb_id is not None and category in _REFINED:
        refined = gtsrb_class(gtsrb_id).sign_type
        # Keep the classifier's finer type only where it fits the detected shape. Stop and yield
        # signs are red-rimmed like the round and triangular ones, and a far one is often
        # detected as those: the classifier, reading the crop close up, tells them apart.
        if refined in _FITS_SHAPE.get(category, set()):
            sign_type = refined
        confidence *= crop.sign_confidence
    value: float | None = None
    unit: SpeedUnit | None = None
    disagree = False
    if category in {"prohibitory", "end_of_restriction", "speed_rect"} and crop.speed_value:
        value = float(crop.speed_value)
        unit = "mph" if category == "speed_rect" else round_unit
        if category == "prohibitory":
            sign_type = SignType.SPEED_LIMIT
        elif category == "end_of_restriction":
            sign_type = SignType.END_OF_SPEED_LIMIT
        confidence = detection.score * crop.speed_confidence
        implied = gtsrb_class(gtsrb_id).speed_value if gtsrb_id is not None else None
        if implied is not None and implied != crop.speed_value:
            disagree = True
            confidence *= DISAGREEMENT_PENALTY
    elif sign_type is SignType.SPEED_LIMIT and category == "prohibitory" and gtsrb_id is not None:
        # The class says speed limit but the speed head read no number: report the class's.
        implied = gtsrb_class(gtsrb_id).speed_value
        if implied is not None:
            value, unit = float(implied), "km/h"
            disagree = True
            confidence *= DISAGREEMENT_PENALTY
    if sign_type is SignType.SPEED_LIMIT and value is None:
        sign_type = SignType.PROHIBITORY if category == "prohibitory" else SignType.OTHER
    if sign_type is SignType.END_OF_SPEED_LIMIT and value is None:
        sign_type = SignType.END_OF_RESTRICTIONS
    return SignReading(
        detection.box, category, sign_type, gtsrb_id, value, unit, float(confidence), disagree
    )


class SignReader:
    """Detector plus classifier: frames in, sign readings out."""

    def __init__(
        self,
        detector: Detector,
        classifier: CropClassifier,
        *,
        round_unit: SpeedUnit = "km/h",
        tiling: TilingPolicy | None = None,
    ) -> None:
        self.detector = detector
        self.classifier = classifier
        self.round_unit = round_unit
        # No policy: the whole frame in one pass, shrunk to the detector's input.
        self.looking = TiledDetection(detector, tiling or TilingPolicy(enabled=False))

    @property
    def tiling(self) -> TilingPolicy:
        """How this reader looks at a frame."""
        return self.looking.policy

    def whole_frames(self) -> SignReader:
        """The same models looking at each whole frame in one pass: how a bundle's golden set
        is recorded, whatever policy a device reads its camera with."""
        return SignReader(self.detector, self.classifier, round_unit=self.round_unit)

    def read(
        self, image: np.ndarray, *, confidence: float = 0.25, iou_threshold: float = 0.45
    ) -> list[SignReading]:
        """Every sign read in one RGB frame (a still: every tile), most confident first."""
        detections = self.detect(image, confidence=confidence, iou_threshold=iou_threshold)
        return sorted(self.read_detections(image, detections), key=lambda r: -r.confidence)

    def detect(
        self,
        image: np.ndarray,
        *,
        confidence: float = 0.25,
        iou_threshold: float = 0.45,
        phase: int | None = None,
    ) -> list[Detection]:
        """The signs in one RGB frame, one box each (`phase`: see `TiledDetection.detect`)."""
        # One box per sign: a sign seen half-way between two categories (a far stop sign as
        # round-red and as octagon) would otherwise be read, tracked and reported twice.
        return self.looking.detect(
            image, confidence=confidence, iou_threshold=iou_threshold, phase=phase
        )

    def read_detections(
        self,
        image: np.ndarray,
        detections: Sequence[Detection],
        *,
        skip: Sequence[bool] | None = None,
    ) -> list[SignReading]:
        """A reading of each detection, in order; those `skip` marks are left unread.

        An unread detection (its sign already reported, say) costs no classification: its
        reading has the detector's type for its shape and confidence 0.
        """
        wanted = [i for i in range(len(detections)) if skip is None or not skip[i]]
        crops = [self.classifier.crop(image, detections[i].box) for i in wanted]
        classified = dict(zip(wanted, self.classifier.classify(crops), strict=True))
        return [
            interpret(d, classified[i], round_unit=self.round_unit)
            if i in classified
            else unread(d)
            for i, d in enumerate(detections)
        ]


def unread(detection: Detection) -> SignReading:
    """A detection nobody read: where the sign is and the type its shape implies, no more."""
    return SignReading(
        detection.box,
        detection.category,
        _TYPE_OF_CATEGORY.get(detection.category, SignType.OTHER),
        None,
        None,
        None,
        0.0,
        False,
    )


def load_reader(
    bundle_dir: Path,
    *,
    backend: str = "auto",
    model_format: str = "auto",
    threads: int = 1,
    round_unit: SpeedUnit = "km/h",
    execution_providers: Sequence[str] = ("CPUExecutionProvider",),
    tiling: TilingPolicy | None = None,
) -> SignReader:
    """A `SignReader` from a model bundle folder, every artifact verified before it loads.

    Both models run on `backend`; with ONNX Runtime, on `execution_providers` in that order.
    `tiling`: how frames are looked at; None looks at each whole frame in one pass.
    """
    from edge_agent.inference import get_backend, resolve_backend_name

    index = load_bundle(bundle_dir)
    name = resolve_backend_name(backend)
    runtime = get_backend(name, execution_providers=execution_providers)
    detector_file, _ = pick_detector(bundle_dir, index, name, model_format)
    detector_metadata = load_metadata(detector_file)  # verified before it loads
    detector = Detector(runtime.load(detector_file, threads=threads), detector_metadata)
    classifier_file = bundle_dir / index.classifier
    classifier_metadata = load_metadata(classifier_file)
    classifier = CropClassifier(runtime.load(classifier_file, threads=threads), classifier_metadata)
    return SignReader(detector, classifier, round_unit=round_unit, tiling=tiling)
