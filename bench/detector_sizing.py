"""Benchmark: detector size against speed, to choose the shipped architecture and input size.

For each architecture and input size: parameters and GFLOPs, the edge agent's `Detector` latency
(letterbox + OpenVINO + NMS) on 640x480 frames with FP32 and INT8 weights, and ultralytics'
training throughput on the CPU. Weights are untrained: speed does not depend on them.

    python bench/detector_sizing.py --output bench/results/detector_sizing.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

PICO = "training/configs/models/roadsign-yolov8-pico.yaml"


def _latency_ms(artifact: Path, frames: list[np.ndarray], threads: int, repeats: int) -> float:
    from edge_agent.detection import Detector

    detector = Detector.load(artifact, backend="openvino", threads=threads)
    for frame in frames[:3]:
        detector.detect(frame)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        detector.detect(frames[i % len(frames)])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> int:
    """Measure every architecture x size and print/write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 416, 480, 640])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    from edge_agent.bundle import ModelFormat
    from training.detector.export import (
        calibration_batches,
        export_openvino,
        write_detector_sidecar,
    )
    from training.detector.offline import disable_integrations, prepare_ultralytics

    work = Path(tempfile.mkdtemp(prefix="sizing-"))
    prepare_ultralytics(work / ".ultralytics")
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    disable_integrations(work)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    scenes = sorted(Path(".cache/datasets/smoke/scenes/images/train").glob("*.jpg"))
    # YOLOv8n with our ten categories (its stock YAML says 80), so both heads are alike.
    import ultralytics

    stock = Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yolov8.yaml"
    nano = work / "yolov8n.yaml"
    nano.write_text(stock.read_text().replace("nc: 80", "nc: 10"))
    rows = []
    for arch in (str(nano), PICO):
        for size in args.sizes:
            model = YOLO(arch, task="detect")
            params, gflops = get_num_params(model.model), get_flops(model.model, size)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                exported = model.export(format="onnx", imgsz=size, simplify=True, verbose=False)
            # A model built from a YAML exports into the working directory: keep it in `work`.
            onnx = Path(shutil.move(exported, work / f"{Path(arch).stem}-{size}.onnx"))
            row = {
                "arch": Path(arch).stem,
                "imgsz": size,
                "params": int(params),
                "gflops": round(float(gflops), 2),
            }
            # Static square graphs: the sizes compare like for like on square inputs.
            stride = None
            calibration = calibration_batches(scenes[:16], size, stride) if scenes else None
            for precision, calib in (("fp32", None), ("int8", calibration)):
                if precision == "int8" and calib is None:
                    continue
                target = work / f"{row['arch']}-{size}-{precision}"
                out = export_openvino(onnx, target, calibration=calib)
                fmt: ModelFormat = "openvino_fp32" if precision == "fp32" else "openvino_int8"
                write_detector_sidecar(
                    out, fmt, imgsz=size, stride=stride, version="bench", run_id=None
                )
                for threads in (1, 2):
                    row[f"ms_{precision}_t{threads}"] = round(
                        _latency_ms(out, frames, threads, args.repeats), 2
                    )
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"rows": rows, "machine": platform.machine(), "python": platform.python_version()}
    shutil.rmtree(work, ignore_errors=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
