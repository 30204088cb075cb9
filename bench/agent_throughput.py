"""Benchmark: the edge agent end to end on a 640x480 drive, against an ultralytics predict loop.

The agent runs as a device does: video decoded on the capture thread, detection (OpenVINO INT8
from the bundle), crop classification, tracking, OCR on each sign's best view, readings written
to a JSON-lines sink. The baseline is ``YOLO(weights).predict`` over the same video with the same
weights at the same input size, in the same process. Also measured: the share of the agent's
frame time spent outside the inference runtimes, steady resident memory, and the median time of
one OCR call per crop with each OCR engine.

    python bench/agent_throughput.py --bundle models/default --output bench/results/agent.json

The two run in alternating rounds (agent, ultralytics, agent, ...) so that a busy spell of a
shared machine hits both alike; each side's figure is its median over the rounds, the ratio the
median of the rounds' own ratios. Resident memory is the agent's, read after its first round,
before ultralytics and PyTorch are imported into the process. The baseline runs with
ultralytics' defaults, as a user would call it (its PyTorch thread count is recorded).

The baseline's weights default to the bundle's ``training/detector.pt``, the checkpoint its
exports came from.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from edge_agent.agent import Agent, JsonLinesSink
from edge_agent.health import HealthMonitor, rss_mb
from edge_agent.ocr import create_ocr, prepare_for_ocr
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import load_reader
from edge_agent.sources import FrameGrabber
from edge_agent.sources.video import VideoFileSource
from training.data.drive import render_drive
from training.data.sign_art import draw_speed_round, draw_text_plate


def run_agent(bundle: Path, video: Path, threads: int) -> dict[str, float]:
    """Frames per second of the whole agent on the video, and where its time went."""
    profile = DeviceProfile.model_validate(
        {
            "detector": {"backend": "openvino", "model_dir": str(bundle), "threads": threads},
            "reading": {"confirm_frames": 3},
            "reporting": {"sink": "stdout", "health_interval_s": 3600},
            "api": {"enabled": False},
        }
    )
    reader = load_reader(bundle, backend="openvino", threads=threads)
    sink = JsonLinesSink(io.StringIO(), "bench-0001")
    ocr = create_ocr("tesserocr")
    agent = Agent(
        profile,
        device_id="bench-0001",
        agent_version="bench",
        reader=reader,
        sink=sink,
        ocr=ocr,
        health=HealthMonitor(Path(tempfile.gettempdir())),
    )
    # Warm up on a few frames so one-time compilation is not counted.
    warm = VideoFileSource(video)
    for _ in range(5):
        frame = warm.read()
        if frame is not None:
            agent.process(frame)
    warm.close()
    reader.detector.infer_seconds = reader.classifier.infer_seconds = 0.0
    grabber = FrameGrabber(VideoFileSource(video), fps_cap=1000, queue_size=4).start()
    started = time.perf_counter()
    frames = agent.run(grabber, threading.Event())
    elapsed = time.perf_counter() - started
    grabber.stop()
    inference = reader.detector.infer_seconds + reader.classifier.infer_seconds
    return {
        "fps": frames / elapsed,
        "frames": frames,
        "readings": agent.readings_sent,
        "overhead_fraction": 1 - inference / elapsed,
        "rss_mb": rss_mb(),
    }


def run_ultralytics(weights: Path, video: Path, imgsz: int) -> tuple[float, int]:
    """Frames per second of an ultralytics predict loop over the same video, and its threads."""
    from training.detector.offline import disable_integrations, prepare_ultralytics

    work = Path(tempfile.mkdtemp(prefix="bench-yolo-"))
    prepare_ultralytics(work / ".ultralytics")
    from ultralytics import YOLO

    disable_integrations(work)
    model = YOLO(str(weights), task="detect")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in model.predict(
            source=str(video), imgsz=imgsz, stream=True, verbose=False, vid_stride=30
        ):
            pass  # warm-up pass over a few frames
        started = time.perf_counter()
        frames = sum(
            1 for _ in model.predict(source=str(video), imgsz=imgsz, stream=True, verbose=False)
        )
    elapsed = time.perf_counter() - started
    import torch

    return frames / elapsed, torch.get_num_threads()


def ocr_ms(engine: str, repeats: int = 40) -> float:
    """Median milliseconds of one OCR call on a prepared sign crop."""
    ocr = create_ocr(engine)
    crops = [
        prepare_for_ocr(_rgb(draw_speed_round(80).rgba), scale=0.5, inner=0.2),
        prepare_for_ocr(_rgb(draw_text_plate("SCHOOL").rgba), scale=0.5),
    ]
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        ocr.read(crops[i % 2], digits_only=i % 2 == 0)
        times.append(time.perf_counter() - started)
    ocr.close()
    return 1000 * statistics.median(times)


def _rgb(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:] / 255
    return (rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


def main() -> int:
    """Render the drive, run both, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/default"))
    parser.add_argument(
        "--weights", type=Path, help="PyTorch weights (default: <bundle>/training/detector.pt)"
    )
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--signs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    video = Path(tempfile.mkdtemp(prefix="bench-drive-")) / "drive.mp4"
    render_drive(video, args.signs)
    weights = args.weights or args.bundle / "training" / "detector.pt"
    agents, baselines, torch_threads = [], [], 0
    for _ in range(args.rounds):
        agents.append(run_agent(args.bundle, video, args.threads))
        fps, torch_threads = run_ultralytics(weights, video, args.imgsz)
        baselines.append(fps)
        print(f"round: agent {agents[-1]['fps']:.1f} fps, ultralytics {fps:.1f} fps", flush=True)
    ratios = [a["fps"] / b for a, b in zip(agents, baselines, strict=True)]
    result = {
        "fps": round(statistics.median(a["fps"] for a in agents), 1),
        "ultralytics_fps": round(statistics.median(baselines), 1),
        "ratio": round(statistics.median(ratios), 2),
        "overhead_fraction": round(statistics.median(a["overhead_fraction"] for a in agents), 3),
        "rss_mb": round(agents[0]["rss_mb"], 1),
        "ocr_ms_tesserocr": round(ocr_ms("tesserocr"), 2),
        "ocr_ms_pytesseract": round(ocr_ms("pytesseract"), 2),
        "frames": agents[0]["frames"],
        "readings": [a["readings"] for a in agents],
        "signs_in_video": args.signs,
        "threads": args.threads,
        "ultralytics_torch_threads": torch_threads,
        "imgsz": args.imgsz,
        "rounds": {
            "fps": [round(a["fps"], 1) for a in agents],
            "ultralytics_fps": [round(b, 1) for b in baselines],
            "ratio": [round(r, 2) for r in ratios],
        },
        "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
