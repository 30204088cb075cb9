"""The training run configuration: the strict schema of the YAML files in ``training/configs/``.

``roadsign-train`` builds one `TrainingConfig` in ``main()`` (``ROADSIGN_TRAIN__SECTION__FIELD``
variables override the file); every stage reads its section from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from fleet_protocol.config_files import StrictConfigModel

ENV_PREFIX = "ROADSIGN_TRAIN__"


class DataConfig(StrictConfigModel):
    """Where data comes from and how it is split."""

    shared_data_dir: Path = Field(
        default=Path("../shared/data"),
        description="Folder of the real sign archives; read in place, never copied into git.",
    )
    cache_dir: Path = Field(
        default=Path(".cache/data"), description="Git-ignored folder archives unpack into."
    )
    out_dir: Path = Field(
        default=Path(".cache/datasets"),
        description="Git-ignored folder the built datasets (scenes, manifests) go into.",
    )
    synthetic_scenes: int = Field(
        default=2000, ge=0, description="Synthetic detector scenes to render for training."
    )
    synthetic_val_scenes: int = Field(
        default=300, ge=0, description="Synthetic scenes for validation, from held-out signs."
    )
    scene_width: int = Field(default=640, ge=64, le=4096, description="Scene width, pixels.")
    scene_height: int = Field(default=480, ge=64, le=4096, description="Scene height, pixels.")
    min_sign_px: int = Field(default=12, ge=4, description="Smallest sign in a scene, pixels.")
    max_sign_px: int = Field(default=200, ge=8, description="Largest sign in a scene, pixels.")
    val_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="Share of tracks / street views for validation."
    )
    test_fraction: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="Share of TT100K street views and US signs held out for the final test; "
        "no training step sees them.",
    )
    seed: int = Field(default=0, ge=0, description="Seed of every random choice.")
    gtsdb_scenes: bool = Field(
        default=False,
        description="Add the real GTSDB training scenes 00000-00599 (gtsdb_scenes.tar.gz) to the "
        "detector's YOLO dataset beside the rendered ones, split into train/val by scene at "
        "val_fraction, sign-free scenes as background images. Scenes 00600-00899 are never "
        "added (they are scored by `roadsign-train evaluate-scenes`). Off: the shipped recipe.",
    )

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave something to train on")
        if self.min_sign_px >= self.max_sign_px:
            raise ValueError("min_sign_px must be below max_sign_px")
        return self


class DetectorTrainingConfig(StrictConfigModel):
    """YOLOv8 detector training with ultralytics, offline."""

    architecture: str = Field(
        default="yolov8n.yaml",
        pattern=r"^(yolov8[nsmlx]\.yaml|training/configs/models/[\w.-]+\.yaml)$",
        description="Ultralytics model YAML (a built-in name or one of training/configs/models); "
        "built from scratch, pretrained=False.",
    )
    imgsz: int = Field(default=640, ge=64, le=1280, multiple_of=32, description="Input size.")
    epochs: int = Field(
        default=50,
        ge=0,
        le=1000,
        description="Training epochs; 0 trains nothing and exports init_weights as they are "
        "(to export a finished checkpoint again with a newer exporter).",
    )
    batch: int = Field(default=16, ge=1, le=512, description="Batch size.")
    device: Literal["cpu", "cuda", "auto"] = Field(
        default="auto", description="auto takes a GPU where one is present, else the CPU."
    )
    workers: int = Field(default=2, ge=0, le=64, description="Data-loader workers.")
    patience: int = Field(default=20, ge=1, description="Epochs without improvement to stop.")
    threads: int = Field(
        default=2, ge=1, le=256, description="torch CPU threads (ultralytics would take cores-1)."
    )
    cache: bool = Field(default=False, description="Keep decoded training images in RAM.")
    init_weights: Path | None = Field(
        default=None,
        description="Start from this checkpoint instead of from scratch (to continue a finished "
        "run with a fresh schedule, e.g. models/default/training/detector.pt); unset: scratch.",
    )
    warmup_epochs: float = Field(
        default=3.0, ge=0, le=50, description="Learning-rate warm-up epochs (0 when continuing)."
    )

    @field_validator("init_weights")
    @classmethod
    def _weights_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value

    @model_validator(mode="after")
    def _export_only_needs_weights(self) -> DetectorTrainingConfig:
        if self.epochs == 0 and self.init_weights is None:
            raise ValueError("epochs 0 exports init_weights, so init_weights must be set")
        return self


class ClassifierTrainingConfig(StrictConfigModel):
    """The crop classifier (sign class and speed value), trained with torch on the CPU."""

    input_size: int = Field(default=32, ge=16, le=128, description="Square crop side, pixels.")
    crop_margin: float = Field(
        default=0.1, ge=0, le=0.5, description="Box widening per side when cutting a crop."
    )
    width: int = Field(default=32, ge=8, le=128, description="Channels of the first layer.")
    epochs: int = Field(default=12, ge=1, le=500, description="Training epochs.")
    batch: int = Field(default=128, ge=8, le=4096, description="Batch size.")
    lr: float = Field(default=3e-3, gt=0, lt=1, description="Peak learning rate (one-cycle).")
    weight_decay: float = Field(default=5e-4, ge=0, lt=1, description="AdamW weight decay.")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1, description="Label smoothing.")
    threads: int = Field(default=2, ge=1, le=256, description="torch CPU threads.")
    rendered_faces: int = Field(
        default=12000, ge=0, description="Procedural faces added to the training crops."
    )
    max_train_images: int | None = Field(
        default=None, ge=1, description="Cap on real training images per set (smoke runs)."
    )
    max_val_images: int | None = Field(
        default=None, ge=1, description="Cap on real validation images per set (smoke runs)."
    )
    eval_backend: Literal["onnxruntime", "openvino"] = Field(
        default="onnxruntime", description="Edge runtime that scores the exported model."
    )


class ExportConfig(StrictConfigModel):
    """Export of the detector: formats, INT8 calibration and the INT8 quality gate."""

    calibration_images: int = Field(
        default=200, ge=1, description="Training scenes (never val/test) that calibrate INT8."
    )
    int8_max_map50_drop: float = Field(
        default=1.5, ge=0, le=100, description="Largest mAP50 loss, in points, INT8 may cost."
    )
    eval_images: int | None = Field(
        default=None, ge=1, description="Cap on validation scenes scored per artifact."
    )
    threads: int = Field(default=2, ge=1, le=256, description="Threads of the scoring runtime.")
    gtsdb_eval_scenes: int | None = Field(
        default=None,
        ge=1,
        le=300,
        description="GTSDB evaluation scenes (00600-00899, in scene order) the bundle stage "
        "scores the bundle on; unset: all 300.",
    )


class MlflowConfig(StrictConfigModel):
    """Run tracking and the model registry."""

    tracking_uri: str = Field(
        default="sqlite:///.cache/mlflow/mlflow.db",
        description="MLflow store: a local SQLite file by default, or http(s):// of a server.",
        pattern=r"^(sqlite:///|https?://|file:)",
    )
    experiment: str = Field(default="roadsign", min_length=1, description="Experiment name.")
    registered_model: str = Field(
        default="roadsign-detector", min_length=1, description="Registry name of the detector."
    )


class TrainingConfig(StrictConfigModel):
    """One training pipeline run."""

    name: str = Field(
        default="default", pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", description="Run name."
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Datasets.")
    detector: DetectorTrainingConfig = Field(
        default_factory=DetectorTrainingConfig, description="Detector training."
    )
    classifier: ClassifierTrainingConfig = Field(
        default_factory=ClassifierTrainingConfig, description="Crop classifier training."
    )
    export: ExportConfig = Field(default_factory=ExportConfig, description="Detector export.")
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig, description="Tracking.")
