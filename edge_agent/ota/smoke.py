"""The smoke test of a staged bundle: it loads with the device's own backend and passes its
golden set, or it is never activated.

The golden-set check lives in edge_agent.golden (``check_golden(reader, bundle_dir)``); it is
imported when a smoke test runs, so this module loads on an agent that predates it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.exceptions import AgentError
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import SignReader, load_reader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmokeResult:
    """Whether a staged bundle may run, why, and the reader it loaded (when it loaded)."""

    passed: bool
    detail: str
    reader: SignReader | None = None


def slot_reader(profile: DeviceProfile, bundle_dir: Path, *, threads: int) -> SignReader:
    """The reader the profile's detector settings make of the bundle in `bundle_dir`."""
    detector = profile.detector
    return load_reader(
        bundle_dir,
        backend=detector.backend,
        model_format=detector.model_format,
        threads=threads,
        round_unit=profile.reading.speed_unit,
        execution_providers=detector.execution_providers,
        tiling=detector.tiling.policy(),
    )


def smoke_test(profile: DeviceProfile, bundle_dir: Path) -> SmokeResult:
    """Load the staged bundle as the frame loop would, run it once, then its golden set."""
    try:
        reader = slot_reader(profile, bundle_dir, threads=profile.detector.threads)
        size = reader.detector.metadata.input_size
        # One inference on a blank frame: a model that loads but cannot run fails here.
        reader.detect(np.zeros((size, size, 3), np.uint8), confidence=0.5, iou_threshold=0.5)
    except AgentError as e:
        return SmokeResult(False, f"smoke test: the staged bundle does not load or run: {e}")
    wanted = profile.detector.input_size
    if wanted is not None and wanted != reader.detector.metadata.input_size:
        return SmokeResult(
            False,
            f"smoke test: the staged detector takes {reader.detector.metadata.input_size} px "
            f"but detector.input_size is {wanted}",
        )
    try:
        from edge_agent import golden  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        log.warning("this agent has no golden-set check; the smoke test only loads and runs")
        return SmokeResult(True, "loads and runs (no golden-set check in this agent)", reader)
    try:
        result = golden.check_golden(reader.whole_frames(), bundle_dir)
    except AgentError as e:
        return SmokeResult(False, f"smoke test: golden set cannot be checked: {e}")
    if not result.passed:
        return SmokeResult(False, f"smoke test: golden set failed: {result.detail}")
    return SmokeResult(True, f"golden set passed: {result.detail}", reader)
