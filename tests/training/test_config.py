"""Training configs: the committed ones are valid and a wrong field is refused with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_protocol.config_files import load_config
from tests.conftest import REPO_ROOT
from training.cli import main
from training.config import TrainingConfig

CONFIGS = sorted((REPO_ROOT / "training" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_committed_config_is_valid_and_named_after_its_file(path: Path) -> None:
    assert load_config(TrainingConfig, path).name == path.stem


def test_smoke_config_is_small_enough_for_ci() -> None:
    smoke = load_config(TrainingConfig, REPO_ROOT / "training" / "configs" / "smoke.yaml")
    assert smoke.detector.epochs <= 2
    assert smoke.detector.imgsz <= 320
    assert smoke.detector.device == "cpu"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("detector:\n  architecture: yolov9c.yaml\n", "detector.architecture"),
        ("detector:\n  imgsz: 100\n", "detector.imgsz"),
        ("mlflow:\n  tracking_uri: ftp://x\n", "mlflow.tracking_uri"),
        ("data:\n  synthetic: 5\n", "data.synthetic"),
    ],
)
def test_validate_config_names_the_bad_field(
    tmp_path: Path, text: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    assert main(["validate-config", str(path)]) == 1
    assert f"{path}:2: {field}:" in capsys.readouterr().out
    assert main(["validate-config", str(CONFIGS[0])]) == 0
