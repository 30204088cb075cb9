"""Running ultralytics with no network: settings, fonts and threads set before it is imported.

Ultralytics looks for its fonts online and caps torch at (cores - 1) threads; both are set here,
once, before the first import, so a run never downloads and uses the threads we measured best.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from training.data.sign_art import _FONT_CANDIDATES
from training.exceptions import TrainingError

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
INTEGRATIONS = (
    "mlflow",
    "tensorboard",
    "wandb",
    "clearml",
    "comet",
    "dvc",
    "hub",
    "neptune",
    "raytune",
    "sync",
)


def prepare_ultralytics(config_dir: Path) -> None:
    """Point ultralytics at `config_dir`, offline, with local fonts under its expected names."""
    font = next((Path(p) for p in _FONT_CANDIDATES if Path(p).is_file()), None)
    if font is None:
        raise TrainingError(
            "no TTF font found for ultralytics (install fonts-dejavu-core); it would try to "
            "download one"
        )
    fonts = config_dir / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    for name in FONT_NAMES:
        if not (fonts / name).is_file():
            shutil.copyfile(font, fonts / name)
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir.resolve())
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "False")


def disable_integrations(runs_dir: Path) -> None:
    """Turn off ultralytics' own loggers: our stage owns the MLflow run, nothing else logs."""
    from ultralytics import settings

    settings.update(
        {
            "runs_dir": str(runs_dir.resolve()),
            **{name: False for name in INTEGRATIONS if name in settings},
        }
    )
