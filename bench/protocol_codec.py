"""Benchmark: cost of validating wire messages, as a ratio to bare ``json.loads`` / ``json.dumps``.

The ingestion worker decodes every reading with `decode_device_message` (topic parse, size check,
strict pydantic validation, device check); this measures what that costs against the least any
receiver must do (parse the JSON), run side by side in one process on the same payloads.

    python bench/protocol_codec.py --messages 20000 --output bench/results/codec.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleet_protocol.codec import decode_device_message, encode
from fleet_protocol.messages import ModelRef, Reading
from fleet_protocol.taxonomy import SignType
from fleet_protocol.topics import MessageKind, device_topic

MODEL = ModelRef(version="2026.11.0", sha256="ab" * 32)
START = datetime(2026, 11, 27, tzinfo=UTC)


def make_readings(count: int) -> list[Reading]:
    """Distinct, realistic readings from 100 devices (no crops, as most readings travel)."""
    return [
        Reading(
            device_id=f"veh-{i % 100:04d}",
            seq=i,
            timestamp=START + timedelta(milliseconds=37 * i),
            sign_type=SignType.SPEED_LIMIT,
            gtsrb_class_id=i % 9 if i % 9 != 6 else 5,
            value=float(30 + 10 * (i % 9)),
            unit="km/h",
            text=str(30 + 10 * (i % 9)),
            confidence=0.5 + (i % 50) / 100,
            bbox=(100.0 + i % 300, 80.0, 160.0 + i % 300, 140.0),
            track_id=i // 3,
            frames_seen=3 + i % 20,
            model=MODEL,
        )
        for i in range(count)
    ]


def best_rate(run: Callable[[], object], count: int, repeats: int) -> float:
    """Messages per second of the fastest of `repeats` runs (least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return count / min(times)


def main() -> int:
    """Run the benchmark and print/write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    readings = make_readings(args.messages)
    dicts = [r.model_dump(mode="json", exclude_none=True) for r in readings]
    payloads = [encode(r) for r in readings]
    topics = [device_topic(r.device_id, MessageKind.READINGS) for r in readings]
    pairs = list(zip(topics, payloads, strict=True))

    results = {
        "messages": args.messages,
        "payload_bytes_median": statistics.median(len(p) for p in payloads),
        "decode_rate": best_rate(
            lambda: [decode_device_message(t, p) for t, p in pairs], args.messages, args.repeats
        ),
        "json_loads_rate": best_rate(
            lambda: [json.loads(p) for p in payloads], args.messages, args.repeats
        ),
        "encode_rate": best_rate(
            lambda: [encode(r) for r in readings], args.messages, args.repeats
        ),
        "json_dumps_rate": best_rate(
            lambda: [json.dumps(d, separators=(",", ":")).encode() for d in dicts],
            args.messages,
            args.repeats,
        ),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    results["decode_ratio"] = results["decode_rate"] / results["json_loads_rate"]
    results["encode_ratio"] = results["encode_rate"] / results["json_dumps_rate"]
    text = json.dumps(results, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
